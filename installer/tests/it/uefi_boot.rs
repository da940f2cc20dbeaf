//! The image boots as a real stick would: OVMF (TCG) loads GRUB from our
//! FAT ESP over USB storage, and GRUB finds our exFAT data partition by its
//! UUID and lists it. GPT with a FAT16 ESP, and MBR with a FAT32 ESP.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hiperiso_installer::image::{self, ImageSpec};
use hiperiso_installer::layout::{Identity, MIB, TableKind};
use hiperiso_stick::qemu::{Accel, Firmware, Machine, QemuCommand};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const SEED: &str = "uefi-boot-test";

fn tools_present() -> bool {
    hiperiso_prereq::tools(&[
        ("grub-mkimage", "grub-common"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ]) && hiperiso_prereq::file(OVMF_CODE, "ovmf")
}

fn esp_tree(root: &Path, big_payload: bool) {
    let boot = root.join("EFI/BOOT");
    fs::create_dir_all(&boot).unwrap();
    fs::create_dir_all(root.join("EFI/hiperiso")).unwrap();
    let status = Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o"])
        .arg(boot.join("BOOTX64.EFI"))
        .args([
            "normal",
            "configfile",
            "echo",
            "fat",
            "exfat",
            "part_gpt",
            "part_msdos",
            "serial",
            "terminal",
        ])
        .args(["halt", "search", "search_fs_uuid", "ls"])
        .status()
        .unwrap();
    assert!(status.success(), "grub-mkimage failed");
    let uuid = Identity::from_seed(SEED).data_fs_uuid();
    fs::write(
        boot.join("grub.cfg"),
        format!(
            "serial --unit=0 --speed=115200\nterminal_output serial\necho ESP-BOOTED\n\
             search --no-floppy --fs-uuid --set=data {uuid}\necho \"DATA=$data\"\nls ($data)/\nhalt\n"
        ),
    )
    .unwrap();
    fs::write(
        root.join("EFI/hiperiso/build.json"),
        r#"{"hiperiso":{"version":"boot-test"}}"#,
    )
    .unwrap();
    if big_payload {
        // Pushes the ESP above 32 MiB: FAT32.
        fs::write(
            root.join("EFI/hiperiso/initramfs.cpio.zst"),
            vec![0x5Au8; 30 * MIB as usize],
        )
        .unwrap();
    }
}

fn boot(image: &Path, vars: &Path) -> String {
    fs::copy(OVMF_VARS, vars).unwrap();
    let mut qemu = QemuCommand::new("qemu-system-x86_64");
    qemu.accel(Accel::Tcg)
        .memory_mb(512)
        .machine(&Machine::q35())
        .display_none()
        .no_reboot()
        .serial_stdio()
        .no_monitor()
        .firmware(&Firmware::Uefi {
            code: OVMF_CODE.into(),
            vars: vars.to_path_buf(),
            secure: false,
        })
        .usb_stick(image, false);
    let mut child = qemu
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

fn check(table: TableKind, big_payload: bool, expected_partition: &str) {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp");
    let data = dir.path().join("data");
    esp_tree(&esp, big_payload);
    fs::create_dir_all(data.join("ISOs")).unwrap();
    fs::create_dir_all(data.join("hiperiso")).unwrap();
    let spec = ImageSpec {
        table,
        size: 256 * MIB,
        seed: SEED.into(),
        data_label: "HIPERISO".into(),
        esp_label: "HIPERISOEFI".into(),
        source_date_epoch: 1_700_000_000,
        esp_tree: esp,
        data_tree: data,
        esp_size: None,
    };
    let img = dir.path().join("stick.img");
    let summary = image::write_image(&spec, &img).unwrap();
    assert_eq!(
        summary.esp.fat_type == hiperiso_installer::fat::FatType::Fat32,
        big_payload
    );
    let serial = boot(&img, &dir.path().join("vars.fd"));
    assert!(
        serial.contains("ESP-BOOTED"),
        "GRUB did not start from the ESP:\n{serial}"
    );
    assert!(
        serial.contains(&format!("DATA={expected_partition}")),
        "data partition not found by UUID:\n{serial}"
    );
    assert!(
        serial.contains("ISOs/") && serial.contains("hiperiso/"),
        "data partition not listed:\n{serial}"
    );
}

#[test]
fn gpt_fat16_esp_boots_under_ovmf() {
    check(TableKind::Gpt, false, "hd0,gpt1");
}

#[test]
fn mbr_fat32_esp_boots_under_ovmf() {
    check(TableKind::Mbr, true, "hd0,msdos1");
}
