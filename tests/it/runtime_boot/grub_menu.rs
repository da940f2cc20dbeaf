//! The stick's GRUB menu in front of hiperiso-init: OVMF boots GRUB from a
//! GPT stick's ESP, the menu boots the session, and its rescue shell entry
//! works after `after=menu` held the menu.

use super::*;
use hiperiso_tests::keyboard::{connect_qmp, press, type_text, wait_event};
use serde_json::Value;
use std::process::{Child, ExitStatus};

/// The GRUB menu from `overlays/esp` on a GPT stick: OVMF boots GRUB from
/// the ESP, GRUB lists `/ISOs/*.iso` on the exFAT data partition, and its
/// default (first) entry boots hiperiso-init with the DESIGN §5 command
/// line, including the data and ESP filesystem UUIDs found by `probe -u`.
#[test]
fn grub_menu_boots_the_first_iso_with_the_uuids_it_probed() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // ESP content.
    let esp_tree = d.join("esp");
    let boot_dir = esp_tree.join("EFI/BOOT");
    let hiperiso_dir = esp_tree.join("EFI/hiperiso");
    fs::create_dir_all(&boot_dir).unwrap();
    fs::create_dir_all(hiperiso_dir.join("trace")).unwrap();
    run(Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o"])
        .arg(boot_dir.join("BOOTX64.EFI"))
        .args([
            "part_gpt",
            "part_msdos",
            "fat",
            "exfat",
            "regexp",
            "probe",
            "loadenv",
            "test",
            "search",
            "serial",
            "terminal",
            "gfxterm",
            "all_video",
            "font",
            "linux",
            "echo",
            "efifwsetup",
            "halt",
            "reboot",
            "normal",
            "configfile",
            "sleep",
        ]));
    fs::copy(
        workspace_root().join("overlays/esp/EFI/BOOT/grub.cfg"),
        boot_dir.join("grub.cfg"),
    )
    .unwrap();
    fs::copy(&fx.kernel, hiperiso_dir.join("vmlinuz")).unwrap();
    run(Command::new("zstd")
        .args(["-1", "-q", "-f", "-o"])
        .arg(hiperiso_dir.join("initramfs.cpio.zst"))
        .arg(&fx.initrd));
    fs::copy(
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        hiperiso_dir.join("OVMF_CODE.fd"),
    )
    .unwrap();
    fs::copy(
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
        hiperiso_dir.join("OVMF_VARS.fd"),
    )
    .unwrap();
    for entry in fs::read_dir(workspace_root().join("overlays/esp/EFI/hiperiso/trace")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(
            &path,
            hiperiso_dir.join("trace").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let esp_img = d.join("esp.img");
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-n", "HIPERESP", "-i", "E5B0071D", "-C"])
        .arg(&esp_img)
        .arg("98304"));
    run(Command::new("mcopy")
        .arg("-s")
        .arg("-i")
        .arg(&esp_img)
        .arg(esp_tree.join("EFI"))
        .arg("::/"));

    // Data partition: one ISO, so the first (default) entry is known.
    let tree = d.join("data");
    fs::create_dir_all(tree.join("ISOs")).unwrap();
    fs::create_dir_all(tree.join("hiperiso")).unwrap();
    fs::copy(fx.isos.join("bios.iso"), tree.join("ISOs/bios.iso")).unwrap();
    let config = r#"{"control": {"default_ram": 256, "default_cpus": 1, "menu_timeout": 3, "default_image": "bios.iso", "session_timeout": 120, "after": "menu"}}"#;
    fs::write(tree.join("hiperiso/hiperiso.json"), config).unwrap();
    let data_size = 64u64 << 20;
    let data_img = d.join("data.img");
    write_data_volume(&data_img, data_size, &tree);

    // GPT disk: data partition 1 from 1 MiB, ESP partition 2 after it.
    let disk = d.join("stick.img");
    let data_start = 1u64 << 20;
    let esp_start = data_start + data_size;
    let esp_size = fs::metadata(&esp_img).unwrap().len();
    File::create(&disk)
        .unwrap()
        .set_len(esp_start + esp_size + (1 << 20))
        .unwrap();
    run(Command::new("sgdisk")
        .arg(format!(
            "--new=1:{}:{}",
            data_start / 512,
            esp_start / 512 - 1
        ))
        .arg("--typecode=1:0700")
        .arg(format!(
            "--new=2:{}:{}",
            esp_start / 512,
            (esp_start + esp_size) / 512 - 1
        ))
        .arg("--typecode=2:ef00")
        .arg(&disk));
    for (img, offset) in [(&data_img, data_start), (&esp_img, esp_start)] {
        run(Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", offset >> 20)));
    }

    let vars = d.join("OVMF_VARS.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let console = d.join("console.log");
    let qmp_socket = d.join("outer-qmp.sock");
    let _slot = VmSlot::acquire();
    let mut outer = QemuCommand::new("qemu-system-x86_64");
    outer
        .accel(Accel::Tcg)
        .cpu("EPYC", "")
        .machine(&Machine::q35().smm(true))
        .memory_mb(3072)
        .smp(1)
        .firmware(&Firmware::Uefi {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars: vars.clone(),
            secure: true,
        })
        .nodefaults()
        .display_none()
        .drive(&Drive::virtio(&disk))
        .serial_chardev("console", &Chardev::File(console.clone()))
        .qmp("qmp", &qmp_socket);
    let mut child = hiperiso_tests::stick::spawn_quiet(&outer);
    let (status, events) = rescue_shell_after_the_menu(&mut child, &console, &qmp_socket);
    let console_text =
        String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    assert!(
        status.success(),
        "outer VM: {status}; console:\n{console_text}"
    );
    // after=menu restarted the machine; the rescue shell powered it off.
    let reasons: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "RESET" || e["event"] == "SHUTDOWN")
        .map(|e| format!("{} {}", e["event"], e["data"]["reason"]))
        .collect();
    assert_eq!(
        reasons,
        [r#""RESET" "guest-reset""#, r#""SHUTDOWN" "guest-shutdown""#],
        "{events:?}"
    );
    let rescue = &console_text[console_text.find("hiperiso: rebooting").unwrap()..];
    for needle in [
        "rescue shell requested (hiperiso.shell=1)",
        SHELL_PROMPT,
        "HIPERISO-RESCUE-42",
        "ISO:bios.iso",
        "reboot: Power down",
    ] {
        assert!(
            rescue.contains(needle),
            "no {needle:?} after the reboot:\n{rescue}"
        );
    }

    // Read the data partition back.
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", data_img.display()))
        .args(["bs=1M", "status=none"])
        .arg(format!("skip={}", data_start >> 20))
        .arg(format!("count={}", data_size >> 20)));
    let result = BootResult {
        console: console_text,
        image: data_img,
        _dir: dir,
    };
    let mut s = SessionFiles::open(&result);
    s.check_guest_ran(BIOS_MARKER, "bios", "kvm");
    let cmdline = &s.info.kernel_cmdline;
    for expected in [
        "hiperiso.iso=/ISOs/bios.iso",
        "hiperiso.data=UUID=4849-5045",
        "hiperiso.esp=UUID=E5B0-071D",
        "console=ttyS0",
    ] {
        // GRUB prints FAT/exFAT UUIDs in lower case; the runtime ignores case.
        assert!(
            cmdline.to_lowercase().contains(&expected.to_lowercase()),
            "{expected} not in {cmdline}"
        );
    }
    let env = s.text("env.txt");
    assert!(
        env.contains("esp_partition=/dev/vda2 (vfat, UUID=E5B0-071D"),
        "{env}"
    );
    let qemu = s.text("qemu.cmdline");
    assert!(
        qemu.contains("/mnt/esp/EFI/hiperiso/trace/trace-standard.events"),
        "{qemu}"
    );
    // hiperiso-init keeps GRUB's env block in sync with hiperiso.json.
    let grubenv = read_all(&mut s.reader, "hiperiso/grubenv");
    let vars = hiperiso_runtime::grubenv::parse(&grubenv);
    assert!(
        vars.contains(&("hiperiso_timeout".into(), "3".into())),
        "{vars:?}"
    );
    assert!(
        vars.contains(&("hiperiso_default".into(), "bios.iso".into())),
        "{vars:?}"
    );
    assert!(
        vars.contains(&("hiperiso_hold".into(), "1".into())),
        "{vars:?}"
    );
}

/// The session (the menu's default entry) ends with `after=menu`: the
/// machine restarts and GRUB's menu waits. There the "Rescue shell" entry
/// (below the one image) is chosen on the keyboard; in that shell (on
/// tty0, the last `console=`) the keyboard types commands whose output is
/// sent to the serial line, and `exit` powers off. The outer machine's exit
/// status and its QMP events.
fn rescue_shell_after_the_menu(
    child: &mut Child,
    console: &Path,
    qmp_socket: &Path,
) -> (ExitStatus, Vec<Value>) {
    let text = || String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + OUTER_TIMEOUT;
    let wait_for = |child: &mut Child, needle: &str, from: usize| {
        while !text().get(from..).unwrap_or("").contains(needle) {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no {needle:?} on the console:\n{}", text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        text().find(needle).unwrap()
    };
    let mut qmp = connect_qmp(child, qmp_socket);
    wait_for(child, "reboot: Restarting system", 0);
    let reset = wait_event(&mut qmp, "RESET", Duration::from_secs(30));
    let restarted = text().len();
    wait_for(child, "Power off", restarted);
    std::thread::sleep(Duration::from_secs(2));
    press(&mut qmp, &["home"]);
    press(&mut qmp, &["down"]);
    press(&mut qmp, &["ret"]);
    wait_for(child, "rescue shell requested", restarted);
    std::thread::sleep(Duration::from_secs(3));
    type_text(&mut qmp, "exec >/dev/ttyS0 2>&1\n");
    type_text(
        &mut qmp,
        "echo HIPERISO-RESCUE-$((6*7)); ls /mnt/data/ISOs | sed s/^/ISO:/\n",
    );
    wait_for(child, "HIPERISO-RESCUE-42", restarted);
    type_text(&mut qmp, "exit\n");
    let shutdown = wait_event(&mut qmp, "SHUTDOWN", Duration::from_secs(60));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (status, vec![reset, shutdown])
}
