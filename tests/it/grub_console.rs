//! The stick's boot console is clean (issue 16): Debian's GRUB and the GRUB
//! built from source both read the stick's grub.cfg without printing an
//! error, up to the menu. Each boots under OVMF with an ESP holding only
//! BOOTX64.EFI and grub.cfg, and a data disk holding /ISOs/ and a grubenv
//! that holds the menu; the serial console is read until the menu's last
//! entry shows.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hiperiso_build::payload::grub::Platform;
use hiperiso_runtime::cmdline::{KernelCmdline, PartitionSpec};
use hiperiso_runtime::grubenv;
use hiperiso_runtime::qmp::Qmp;
use hiperiso_stick::qemu::{Accel, Chardev, Drive, Firmware, Machine, QemuCommand};
use hiperiso_tests::keyboard::{connect_qmp, press, wait_event};
use hiperiso_tests::{outer_qemu, workspace_root};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The last entry of the menu (overlays/esp/EFI/BOOT/grub.cfg).
const LAST_ENTRY: &str = "Power off";
/// The entry in place of the images when /ISOs/ holds none.
const NO_ISO: &str = "No ISO images found";

/// grub.cfg spells the contract's names (GRUB's script cannot use the
/// constants of `hiperiso_stick::boot`): every grubenv key it loads and
/// every kernel command line key it passes.
#[test]
fn grub_cfg_speaks_the_contracts_names() {
    use hiperiso_stick::boot::{cmdline, grubenv};
    let cfg = fs::read_to_string(workspace_root().join("overlays/esp/EFI/BOOT/grub.cfg")).unwrap();
    let load_env = cfg
        .lines()
        .find(|l| l.trim_start().starts_with("load_env"))
        .expect("grub.cfg loads the environment block");
    for key in [grubenv::TIMEOUT, grubenv::DEFAULT, grubenv::HOLD] {
        assert!(
            load_env.contains(key),
            "load_env does not read {key}: {load_env}"
        );
    }
    for key in [cmdline::ISO, cmdline::DATA, cmdline::ESP, cmdline::SHELL] {
        assert!(
            cfg.contains(&format!("{key}=")),
            "grub.cfg never passes {key}="
        );
    }
    assert!(cfg.contains(hiperiso_stick::paths::data::GRUBENV));
    assert!(cfg.contains(hiperiso_stick::paths::esp::VMLINUZ));
    assert!(cfg.contains(hiperiso_stick::paths::esp::INITRAMFS));
    // The Secure Boot entry (its GRUB cannot read exFAT, so no UUID) names
    // the data partition by its number beside the ESP: a stick made with
    // another data-label must boot there too.
    let pick = format!("{}={}", cmdline::ISO, cmdline::ISO_PICK);
    let pick = cfg
        .lines()
        .find(|l| l.contains(&pick))
        .expect("grub.cfg has the Secure Boot entry");
    let parsed = KernelCmdline::parse(pick);
    assert_eq!(
        parsed.data,
        PartitionSpec::OnEspDisk(cmdline::DATA_PARTITION_NUMBER),
        "{pick}"
    );
    // ... and the ESP, through the variable every entry passes.
    assert!(pick.contains("${hiperiso_esp}"), "{pick}");
    assert!(
        cfg.contains(&format!("set hiperiso_esp=\"{}=UUID=", cmdline::ESP)),
        "grub.cfg sets hiperiso_esp"
    );
    // The rescue entry names the data partition as the ISO entries do, by
    // UUID when GRUB could read it, else (Secure Boot) by its number.
    let rescue = cfg
        .lines()
        .find(|l| l.contains(&format!("{}=1", cmdline::SHELL)))
        .expect("grub.cfg has the rescue entry");
    assert!(rescue.contains("${hiperiso_data}"), "{rescue}");
    for value in [
        "UUID=${data_uuid}".to_string(),
        format!(
            "{}{}",
            cmdline::DATA_ON_ESP_DISK,
            cmdline::DATA_PARTITION_NUMBER
        ),
    ] {
        let set = format!("set hiperiso_data=\"{}={value}\"", cmdline::DATA);
        assert!(cfg.contains(&set), "grub.cfg never does `{set}`");
    }
}

#[test]
fn debians_grub_reads_grub_cfg_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let efi = dir.path().join("BOOTX64.EFI");
    // grub-mkimage from Debian's grub-efi-amd64-bin with the stick's module
    // list, exactly as the debian profile builds it.
    let modules = Platform::Efi.modules();
    let status = Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o"])
        .arg(&efi)
        .args(&modules)
        .status()
        .expect("grub-mkimage (Debian's grub-common and grub-efi-amd64-bin)");
    assert!(status.success(), "grub-mkimage failed: {status}");
    let (mut child, mut qmp) = assert_clean_menu(dir.path(), &efi, true);
    select_reboot_then_power_off(&mut child, &mut qmp, &dir.path().join("console.log"));
    // A stick without images: the "no ISO" entry instead, no error either.
    let empty = tempfile::tempdir().unwrap();
    let (mut child, _) = assert_clean_menu(empty.path(), &efi, false);
    stop(&mut child);
}

#[test]
fn the_grub_built_from_source_reads_grub_cfg_without_an_error() {
    let step = outer_qemu::built_step("grub-image").expect("the grub-image step");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _) = assert_clean_menu(dir.path(), &step.join("EFI/BOOT/BOOTX64.EFI"), true);
    stop(&mut child);
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn console_text(console: &Path) -> String {
    String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).into_owned()
}

/// The menu's "Reboot" entry (the one above the last) resets the machine
/// (QMP's RESET event with reason `guest-reset`); GRUB's menu comes back,
/// and its last entry, "Power off", powers the machine off (SHUTDOWN,
/// `guest-shutdown`) and QEMU exits. The keys are typed on the machine's
/// keyboard, which GRUB reads besides the serial line.
fn select_reboot_then_power_off(child: &mut Child, qmp: &mut Qmp, console: &Path) {
    press(qmp, &["end"]);
    press(qmp, &["up"]);
    press(qmp, &["ret"]);
    let reset = wait_event(qmp, "RESET", Duration::from_secs(60));
    assert_eq!(reset["data"]["reason"], "guest-reset", "{reset}");
    assert!(
        qmp.events.iter().all(|e| e["event"] != "SHUTDOWN"),
        "{:?}",
        qmp.events
    );
    let before = console_text(console).len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !console_text(console)[before..].contains(LAST_ENTRY) {
        assert!(
            Instant::now() < deadline,
            "no menu after the reset:\n{}",
            console_text(console)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(2));
    press(qmp, &["end"]);
    press(qmp, &["ret"]);
    let shutdown = wait_event(qmp, "SHUTDOWN", Duration::from_secs(60));
    assert_eq!(shutdown["data"]["reason"], "guest-shutdown", "{shutdown}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            stop(child);
            panic!("QEMU did not exit after the guest powered off");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "QEMU: {status}");
}

/// Boots `efi` with the stick's grub.cfg and asserts the console shows the
/// whole menu and no `error:` line; `/ISOs/` holds two images, one in a
/// subdirectory, or (`with_isos` false) none. The machine keeps running
/// (a reset restarts it) with its QMP session.
fn assert_clean_menu(dir: &Path, efi: &Path, with_isos: bool) -> (Child, Qmp) {
    let esp = dir.join("esp/EFI/BOOT");
    fs::create_dir_all(&esp).unwrap();
    fs::copy(efi, esp.join("BOOTX64.EFI")).unwrap();
    fs::copy(
        workspace_root().join("overlays/esp/EFI/BOOT/grub.cfg"),
        esp.join("grub.cfg"),
    )
    .unwrap();
    let data = dir.join("data");
    fs::create_dir_all(data.join("ISOs")).unwrap();
    fs::create_dir_all(data.join("hiperiso")).unwrap();
    if with_isos {
        fs::write(data.join("ISOs/example.iso"), b"not booted").unwrap();
        fs::create_dir_all(data.join("ISOs/linux")).unwrap();
        fs::write(data.join("ISOs/linux/nested.iso"), b"not booted").unwrap();
    }
    // Hold the menu (grub.cfg: hiperiso_hold=1 waits for a key).
    let env = grubenv::render(&[("hiperiso_hold", "1".to_string())]).unwrap();
    fs::write(data.join("hiperiso/grubenv"), env).unwrap();
    let vars = dir.join("vars.fd");
    fs::copy(OVMF_VARS, &vars).unwrap();
    let console = dir.join("console.log");
    let qmp_socket = dir.join("qmp.sock");

    let mut q = QemuCommand::new("qemu-system-x86_64");
    q.machine(&Machine::q35())
        .accel(Accel::Tcg)
        .memory_mb(512)
        .nodefaults()
        .display_none()
        .firmware(&Firmware::Uefi {
            code: OVMF_CODE.into(),
            vars,
            secure: false,
        })
        .drive(
            &Drive::new()
                .opt("format", "raw")
                .opt("file", &format!("fat:rw:{}", dir.join("esp").display())),
        )
        .drive(
            &Drive::new()
                .opt("format", "raw")
                .opt("file", &format!("fat:rw:{}", data.display())),
        )
        .serial_chardev("console", &Chardev::File(console.clone()))
        .qmp("qmp", &qmp_socket);
    let mut child = hiperiso_tests::stick::spawn_quiet(&q);
    let qmp = connect_qmp(&mut child, &qmp_socket);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
        if text.contains(LAST_ENTRY) {
            // let GRUB finish drawing, then stop
            std::thread::sleep(Duration::from_secs(2));
            text = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !text.contains(LAST_ENTRY) {
        stop(&mut child);
    }
    assert!(
        text.contains(LAST_ENTRY),
        "the menu did not show within 120 s:\n{text}"
    );
    for entry in ["Rescue shell", "Firmware setup", "Reboot"] {
        assert!(text.contains(entry), "no {entry} entry:\n{text}");
    }
    if with_isos {
        assert!(text.contains("example.iso"), "no image:\n{text}");
        // An image in a subdirectory of /ISOs/ is listed by its path below
        // it (the entry passes hiperiso.iso=/ISOs/linux/nested.iso).
        assert!(
            text.contains("linux/nested.iso"),
            "no subdirectory image:\n{text}"
        );
        assert!(!text.contains(NO_ISO), "{text}");
    } else {
        assert!(text.contains(NO_ISO), "no \"no ISO\" entry:\n{text}");
    }
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error:")).collect();
    assert!(
        errors.is_empty(),
        "GRUB printed errors: {errors:#?}\n{text}"
    );
    (child, qmp)
}
