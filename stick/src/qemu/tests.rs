use super::*;

fn value_after(argv: &[String], flag: &str) -> Vec<String> {
    argv.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

fn args(q: &QemuCommand) -> Vec<&str> {
    q.args_list().iter().map(String::as_str).collect()
}

#[test]
fn escape_doubles_commas() {
    assert_eq!(escape("a,b,,c"), "a,,b,,,,c");
    assert_eq!(escape_path(Path::new("/x/a,b.iso")), "/x/a,,b.iso");
}

#[test]
fn machine_properties_in_order() {
    let m = Machine::q35().accel(Accel::Kvm).smm(true);
    assert_eq!(m.value(), "q35,accel=kvm,smm=on");
    assert_eq!(
        Machine::q35().accel(Accel::Tcg).smm(false).value(),
        "q35,accel=tcg,smm=off"
    );
    assert_eq!(Machine::pc().value(), "pc");
    assert_eq!(
        Machine::new("q35").opt("kernel-irqchip", "split").value(),
        "q35,kernel-irqchip=split"
    );
}

#[test]
fn program_first_then_args_in_call_order() {
    let mut q = QemuCommand::new("/usr/bin/qemu-system-x86_64");
    q.name("hiperiso-guest")
        .nodefaults()
        .no_user_config()
        .accel(Accel::Tcg)
        .memory_mb(512)
        .smp(1)
        .no_reboot();
    assert_eq!(
        q.argv(),
        [
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "hiperiso-guest",
            "-nodefaults",
            "-no-user-config",
            "-accel",
            "tcg",
            "-m",
            "512",
            "-smp",
            "1",
            "-no-reboot"
        ]
    );
    assert_eq!(q.program(), "/usr/bin/qemu-system-x86_64");
    let command = q.command();
    assert_eq!(command.get_program(), "/usr/bin/qemu-system-x86_64");
    assert_eq!(command.get_args().count(), q.args_list().len());
}

#[test]
fn cpu_features() {
    let mut q = QemuCommand::new("qemu");
    q.cpu("host", "")
        .cpu("max", "+svm,-x2apic")
        .cpu("max", ",+svm,")
        .cpu("EPYC", "");
    assert_eq!(
        value_after(&q.argv(), "-cpu"),
        ["host", "max,+svm,-x2apic", "max,+svm", "EPYC"]
    );
}

#[test]
fn uefi_firmware_is_two_pflash_drives() {
    let mut q = QemuCommand::new("qemu");
    q.firmware(&Firmware::Uefi {
        code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        vars: "/run/hiperiso/OVMF_VARS.fd".into(),
        secure: true,
    });
    assert_eq!(
        args(&q),
        [
            "-global",
            "driver=cfi.pflash01,property=secure,value=on",
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            "-drive",
            "if=pflash,format=raw,unit=1,file=/run/hiperiso/OVMF_VARS.fd",
        ]
    );
    let mut q = QemuCommand::new("qemu");
    q.firmware(&Firmware::Uefi {
        code: "/a,b/CODE.fd".into(),
        vars: "/tmp/VARS.fd".into(),
        secure: false,
    });
    assert_eq!(
        args(&q),
        [
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file=/a,,b/CODE.fd",
            "-drive",
            "if=pflash,format=raw,unit=1,file=/tmp/VARS.fd",
        ]
    );
}

#[test]
fn bios_firmware() {
    let mut q = QemuCommand::new("qemu");
    q.firmware(&Firmware::Bios {
        image: Some("/usr/share/seabios/bios-256k.bin".into()),
    });
    assert_eq!(args(&q), ["-bios", "/usr/share/seabios/bios-256k.bin"]);
    let mut q = QemuCommand::new("qemu");
    q.firmware(&Firmware::Bios { image: None });
    assert!(q.args_list().is_empty());
}

#[test]
fn drives() {
    let mut q = QemuCommand::new("qemu");
    q.cdrom("iso0", Path::new("/data/ISOs/a,b.iso"), 0)
        .drive(&Drive::virtio(Path::new("/tmp/d.img")).opt("cache", "writeback"))
        .drive(
            &Drive::new()
                .opt("format", "raw")
                .opt("file", "fat:rw:/tmp/e,sp"),
        );
    assert_eq!(
        args(&q),
        [
            "-drive",
            "if=none,id=iso0,media=cdrom,readonly=on,format=raw,file=/data/ISOs/a,,b.iso",
            "-device",
            "ide-cd,drive=iso0,bus=ide.0,bootindex=0",
            "-drive",
            "file=/tmp/d.img,format=raw,if=virtio,cache=writeback",
            "-drive",
            "format=raw,file=fat:rw:/tmp/e,,sp",
        ]
    );
}

#[test]
fn usb_stick_on_xhci() {
    let mut q = QemuCommand::new("qemu");
    q.usb_stick(Path::new("/images/a,b.img"), false)
        .device(&format!("usb-tablet,bus={USB_BUS}"));
    assert_eq!(
        args(&q),
        [
            "-device",
            "qemu-xhci,id=xhci",
            "-drive",
            "if=none,id=stick,format=raw,file=/images/a,,b.img",
            "-device",
            "usb-storage,bus=xhci.0,drive=stick,removable=on,bootindex=1",
            "-device",
            "usb-tablet,bus=xhci.0",
        ]
    );
}

#[test]
fn chardevs_serial_and_monitors() {
    let mut q = QemuCommand::new("qemu");
    q.serial_chardev("serial0", &Chardev::File("/s/serial,1.log".into()))
        .qmp("qmp0", Path::new("/run/hiperiso/monitor.sock"))
        .serial_chardev(
            "console",
            &Chardev::Stdio {
                logfile: Some("/tmp/console.log".into()),
            },
        )
        .chardev("plain", &Chardev::Stdio { logfile: None })
        .serial_stdio()
        .no_monitor();
    assert_eq!(
        args(&q),
        [
            "-chardev",
            "file,id=serial0,path=/s/serial,,1.log",
            "-serial",
            "chardev:serial0",
            "-chardev",
            "socket,id=qmp0,path=/run/hiperiso/monitor.sock,server=on,wait=off",
            "-mon",
            "chardev=qmp0,mode=control",
            "-chardev",
            "stdio,id=console,logfile=/tmp/console.log",
            "-serial",
            "chardev:console",
            "-chardev",
            "stdio,id=plain",
            "-serial",
            "stdio",
            "-monitor",
            "none",
        ]
    );
}

#[test]
fn display_debugcon_network_tpm_trace_actions() {
    let mut q = QemuCommand::new("qemu");
    q.device("VGA")
        .display_none()
        .vga("std")
        .nographic()
        .vnc_unix(Path::new("/run/hiperiso/vnc.sock"))
        .debugcon("debugcon0", Path::new("/s/firmware.log"))
        .user_net("e1000e", true)
        .user_net("e1000e", false)
        .net_dump(Path::new("/s/network.pcap"))
        .tpm_emulator(Path::new("/run/hiperiso/swtpm.sock"))
        .trace(
            Path::new("/esp/trace-standard.events"),
            Path::new("/s/trace.bin"),
        )
        .action("panic", "exit-failure")
        .rtc_utc()
        .direct_kernel(
            Path::new("/k/vmlinuz"),
            Path::new("/k/initrd"),
            "console=ttyS0 panic=-1",
        )
        .args(["-net", "none"]);
    assert_eq!(
        args(&q),
        [
            "-device",
            "VGA",
            "-display",
            "none",
            "-vga",
            "std",
            "-nographic",
            "-vnc",
            "unix:/run/hiperiso/vnc.sock",
            "-chardev",
            "file,id=debugcon0,path=/s/firmware.log",
            "-device",
            "isa-debugcon,iobase=0x402,chardev=debugcon0",
            "-netdev",
            "user,id=net0",
            "-device",
            "e1000e,netdev=net0",
            "-netdev",
            "user,id=net0",
            "-device",
            "e1000e,netdev=net0,romfile=",
            "-object",
            "filter-dump,id=dump0,netdev=net0,file=/s/network.pcap",
            "-chardev",
            "socket,id=chrtpm,path=/run/hiperiso/swtpm.sock",
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-tis,tpmdev=tpm0",
            "-trace",
            "events=/esp/trace-standard.events,file=/s/trace.bin",
            "-action",
            "panic=exit-failure",
            "-rtc",
            "base=utc",
            "-kernel",
            "/k/vmlinuz",
            "-initrd",
            "/k/initrd",
            "-append",
            "console=ttyS0 panic=-1",
            "-net",
            "none",
        ]
    );
}

/// `hiperiso-build run`'s outer VM: a PC with OVMF and the image as a USB
/// stick, console to a file, QMP for tests.
#[test]
fn outer_vm_of_run() {
    let mut q = QemuCommand::new("qemu-system-x86_64");
    q.machine(&Machine::q35())
        .accel(Accel::Tcg)
        .cpu("EPYC", "")
        .memory_mb(3072)
        .smp(1)
        .nodefaults()
        .display_none()
        .vga("std")
        .no_reboot()
        .firmware(&Firmware::Uefi {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars: "/tmp/vars.fd".into(),
            secure: false,
        })
        .usb_stick(Path::new("/images/a,b.img"), false)
        .serial_chardev("console", &Chardev::File("/tmp/console.log".into()))
        .no_monitor()
        .qmp("qmp", Path::new("/tmp/qmp.sock"));
    let line = q.argv().join(" ");
    assert!(
        line.starts_with("qemu-system-x86_64 -machine q35 -accel tcg -cpu EPYC -m 3072"),
        "{line}"
    );
    assert!(line.contains("-device qemu-xhci,id=xhci"), "{line}");
    assert!(
        line.contains("usb-storage,bus=xhci.0,drive=stick"),
        "{line}"
    );
    assert!(line.contains("file=/images/a,,b.img"), "{line}");
    assert!(
        line.contains("if=pflash,format=raw,unit=0,readonly=on"),
        "{line}"
    );
    assert!(line.contains("-serial chardev:console"), "{line}");
}

#[test]
fn cmdline_text_is_quoted() {
    let mut q = QemuCommand::new("/usr/bin/qemu-system-x86_64");
    q.name("hiperiso-guest")
        .cdrom("iso0", Path::new("/data/ISOs/my image's.iso"), 0)
        .rtc_utc();
    let text = q.cmdline_text();
    assert!(text.starts_with("/usr/bin/qemu-system-x86_64 \\\n  -name \\\n  hiperiso-guest"));
    assert!(
        text.contains(r#"'if=none,id=iso0,media=cdrom,readonly=on,format=raw,file=/data/ISOs/my image'\''s.iso'"#),
        "{text}"
    );
    assert!(text.ends_with("-rtc \\\n  base=utc\n"), "{text}");
    assert_eq!(shell_quote(""), "''");
    assert_eq!(shell_quote("a=b,c:d"), "a=b,c:d");
}
