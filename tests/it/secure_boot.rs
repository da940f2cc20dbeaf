//! Secure Boot with Debian's signed chain (issue 20), through real
//! firmware: Debian's OVMF with Secure Boot enforced and Microsoft's keys
//! enrolled (`OVMF_CODE_4M.secboot.fd` + `OVMF_VARS_4M.ms.fd`) boots the
//! debian profile's stick: shim (signed by Microsoft's UEFI CA) -> Debian's
//! signed GRUB -> Debian's signed kernel -> hiperiso-init, which reports
//! `secure_boot=enabled` and the kernel's lockdown. GRUB cannot read exFAT
//! there, so its menu boots `hiperiso.iso=pick` and hiperiso-init takes the
//! grubenv default from the partition beside the ESP (the stick's data
//! label is not the default one). The same firmware refuses the stick once
//! one byte of its GRUB is changed: the chain is really checked.
//!
//! The user's own key (docs/secure-boot.md): OVMF with ONLY a key made by
//! `keys secure-boot` enrolled (PK, KEK, db; no Microsoft key) boots the
//! same ESP signed with it by payload::secure_boot::sign_esp, the function
//! `[secure-boot]` runs: Debian's shim with the user's signature added,
//! GRUB of Debian's grub-efi-amd64-bin (the from-source profile's takes
//! ~30 min to build) signed with the key, and Debian's kernel with its
//! Debian signature removed and the user's put on (so the kernel is
//! accepted for the user's key, not through shim's built-in Debian CA).
//! GRUB has exFAT built in, so the normal menu boots the ISO. The same
//! firmware refuses a GRUB signed with another key. The default profile's
//! chain boots the same way: the shim step's shim (from source, no vendor
//! certificate) and the grub-image step's GRUB, both signed with the key.
//!
//! Each boot stops at hiperiso-init's Secure Boot line (what runs after it
//! is the e2e suite's). The signed chain's rescue entry is booted as well:
//! its shell sees the data partition GRUB could not read.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hiperiso_build::payload::grub::Platform;
use hiperiso_build::payload::secure_boot::{self, Grub, SigningKey};
use hiperiso_installer::{inspect, pe};
use hiperiso_runtime::init::DATA_MOUNT;
use hiperiso_stick::paths::esp::{BOOT_EFI, SIGNED_GRUB_EFI, VMLINUZ};
use hiperiso_stick::qemu::Firmware;
use hiperiso_tests::{keyboard, outer_qemu, stick};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// OVMF's empty variable store (no key: Secure Boot in setup mode).
const OVMF_VARS_EMPTY: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The signatures' time (the payload's SOURCE_DATE_EPOCH in a build).
const EPOCH: i64 = 1_700_000_000;
/// hiperiso-init's lines (runtime/src/init/boot.rs): the first at its
/// start, the second once the data partition is mounted.
const SECURE_BOOT_LINE: &str = "secure_boot=";
const PICK_LINE: &str = "hiperiso.iso=pick: booting";
/// The data partition's label on the Secure Boot stick (the manifest's is
/// HIPERISO).
const CUSTOM_LABEL: &str = "MYSTICK";
/// The common name of the user's key in the user-key tests.
const KEY_NAME: &str = "hiperiso CI db key";

#[test]
fn secure_boot_ovmf_boots_the_signed_chain_and_refuses_a_tampered_grub() {
    let dir = tempfile::tempdir().unwrap();
    let esp = stick::shared_esp();
    let shim = fs::read(esp.join(BOOT_EFI)).unwrap();
    let signature = pe::signature(&shim).expect("BOOTX64.EFI (shim) carries a signature");
    assert!(
        signature
            .common_names
            .iter()
            .any(|cn| cn.contains("Microsoft Corporation UEFI CA")),
        "shim is signed through Microsoft's UEFI CA: {:?}",
        signature.common_names
    );

    // A data label other than the default: the pick entry finds the data
    // partition beside the ESP, not by label.
    let image = dir.path().join("signed.img");
    stick::write_image(dir.path(), esp, &image, None, Some(CUSTOM_LABEL)).unwrap();
    let shown = inspect::inspect_path(&image).unwrap().to_string();
    assert!(
        shown.contains("UEFI and UEFI Secure Boot")
            && shown.contains("Microsoft Corporation UEFI CA"),
        "{shown}"
    );
    stick::add_placeholder_iso(&image, "sb-test.iso");
    let vars = Path::new(OVMF_VARS);
    let (reached, text) = boot(dir.path(), &image, "signed", vars, PICK_LINE);
    assert!(
        reached,
        "Secure Boot OVMF did not reach hiperiso-init within {BOOT_TIMEOUT:?}:\n{}",
        stick::tail(&text, 40)
    );
    let line = text.lines().find(|l| l.contains(SECURE_BOOT_LINE)).unwrap();
    assert!(
        line.contains("secure_boot=enabled") && line.contains("lockdown=integrity"),
        "{line}"
    );
    assert!(
        text.contains(&format!("{PICK_LINE} /ISOs/sb-test.iso")),
        "hiperiso-init did not pick the grubenv default:\n{}",
        stick::tail(&text, 40)
    );
    rescue_shell_mounts_the_data_partition(dir.path(), &image, vars);

    // One byte of GRUB's code changed: shim must refuse it.
    let tampered_esp = dir.path().join("esp-tampered");
    stick::copy_tree(esp, &tampered_esp);
    let grub = tampered_esp.join(SIGNED_GRUB_EFI);
    let mut bytes = fs::read(&grub).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&grub, bytes).unwrap();
    let image = dir.path().join("tampered.img");
    stick::write_image(dir.path(), &tampered_esp, &image, None, None).unwrap();
    stick::add_placeholder_iso(&image, "sb-test.iso");
    let (reached, text) = boot(dir.path(), &image, "tampered", vars, PICK_LINE);
    assert!(
        !reached && !text.contains("GNU GRUB") && !text.contains("hiperiso-init"),
        "the tampered GRUB ran under Secure Boot:\n{}",
        stick::tail(&text, 40)
    );
    assert!(
        text.contains("Security Violation") || text.contains("Verification failed"),
        "no refusal on the console (did the boot get as far as shim?):\n{}",
        stick::tail(&text, 40)
    );
}

#[test]
fn secure_boot_ovmf_with_only_the_users_key_boots_the_user_signed_chain() {
    let dir = tempfile::tempdir().unwrap();
    let key = secure_boot::generate(&dir.path().join("keys"), KEY_NAME).unwrap();
    let wrong = secure_boot::generate(&dir.path().join("wrong"), "not enrolled").unwrap();
    let root = stick::package_tree().unwrap();
    let modules = Platform::Efi.modules();
    let esp = user_signed_esp(dir.path(), &key, &root, Grub::Modules(&modules));
    let vars = boots_with_only_the_users_key(dir.path(), &key, &esp);

    // GRUB signed with a key that is not enrolled: shim refuses it.
    let grub = esp.join(SIGNED_GRUB_EFI);
    command("sbattach", |c| c.arg("--remove").arg(&grub));
    secure_boot::sign(&wrong, &grub, EPOCH).unwrap();
    let image = dir.path().join("wrong-key.img");
    stick::write_image(dir.path(), &esp, &image, None, None).unwrap();
    stick::add_placeholder_iso(&image, "sb-test.iso");
    let (reached, text) = boot(dir.path(), &image, "wrong-key", &vars, SECURE_BOOT_LINE);
    assert!(
        !reached && !text.contains("GNU GRUB"),
        "a GRUB signed with a key not in db ran:\n{}",
        stick::tail(&text, 40)
    );
    assert!(
        text.contains("Security Violation") || text.contains("Verification failed"),
        "no refusal on the console:\n{}",
        stick::tail(&text, 40)
    );
}

/// The default profile's chain: the shim step's shim (built from source,
/// no vendor certificate, signed only by the user) and the grub-image
/// step's GRUB (upstream 2.06 with its own .sbat). The kernel is still
/// Debian's, re-signed: the from-source kernel takes ~20 min to build.
#[test]
fn secure_boot_ovmf_with_only_the_users_key_boots_the_from_source_shim_and_grub() {
    let dir = tempfile::tempdir().unwrap();
    let key = secure_boot::generate(&dir.path().join("keys"), KEY_NAME).unwrap();
    let shim = outer_qemu::built_step("shim").unwrap();
    let grub = outer_qemu::built_step("grub-image").unwrap();
    let root = dir.path().join("root");
    let tree_shim = root.join(secure_boot::UNSIGNED_SHIM);
    fs::create_dir_all(tree_shim.parent().unwrap()).unwrap();
    fs::copy(shim.join(secure_boot::UNSIGNED_SHIM), &tree_shim).unwrap();
    assert!(pe::signature(&fs::read(&tree_shim).unwrap()).is_none());
    let grub = grub.join(BOOT_EFI);
    let esp = user_signed_esp(dir.path(), &key, &root, Grub::Image(&grub));
    let shim = pe::signature(&fs::read(esp.join(BOOT_EFI)).unwrap()).unwrap();
    assert_eq!(shim.common_names, [KEY_NAME], "not the shim step's shim");
    boots_with_only_the_users_key(dir.path(), &key, &esp);
}

/// The shared ESP signed by `sign_esp` with `key`, shim from `root`, GRUB
/// from `grub`; the kernel's Debian signature removed first, so shim's
/// built-in Debian CA cannot be what lets it through.
fn user_signed_esp(dir: &Path, key: &SigningKey, root: &Path, grub: Grub) -> PathBuf {
    let esp = dir.join("esp-user");
    stick::copy_tree(stick::shared_esp(), &esp);
    let kernel = esp.join(VMLINUZ);
    command("sbattach", |c| c.arg("--remove").arg(&kernel));
    secure_boot::sign_esp(root, &esp, key, grub, EPOCH).unwrap();
    let names = |file: &str| {
        pe::signature(&fs::read(esp.join(file)).unwrap())
            .unwrap()
            .common_names
    };
    assert!(names(BOOT_EFI).iter().any(|n| n == KEY_NAME));
    assert_eq!(names(SIGNED_GRUB_EFI), [KEY_NAME]);
    assert_eq!(names(VMLINUZ), [KEY_NAME]);
    esp
}

/// Boots `esp` under OVMF with only `key` enrolled: hiperiso-init must
/// report Secure Boot enabled, and GRUB must have read the exFAT data
/// partition (the ISO's own menu entry booted, not the pick). Returns the
/// variable store.
fn boots_with_only_the_users_key(dir: &Path, key: &SigningKey, esp: &Path) -> PathBuf {
    let vars = dir.join("vars-user-key.fd");
    enroll_only(key, &vars);
    let image = dir.join("user.img");
    stick::write_image(dir, esp, &image, None, None).unwrap();
    stick::add_placeholder_iso(&image, "sb-test.iso");
    let (reached, text) = boot(dir, &image, "user", &vars, SECURE_BOOT_LINE);
    assert!(
        reached,
        "OVMF with only the user's key did not reach hiperiso-init:\n{}",
        stick::tail(&text, 40)
    );
    let line = text.lines().find(|l| l.contains(SECURE_BOOT_LINE)).unwrap();
    assert!(line.contains("secure_boot=enabled"), "{line}");
    assert!(
        text.contains("hiperiso.iso=/ISOs/sb-test.iso"),
        "the ISO's menu entry did not boot:\n{}",
        stick::tail(&text, 40)
    );
    vars
}

/// Runs `program` as `args` makes it, which must succeed.
fn command(
    program: &str,
    args: impl FnOnce(&mut std::process::Command) -> &mut std::process::Command,
) {
    let mut command = std::process::Command::new(program);
    let status = args(&mut command)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e} (apt install sbsigntool)"));
    assert!(status.success(), "{command:?}: {status}");
}

/// OVMF's empty store with `key` as PK, KEK and the only db entry, Secure
/// Boot on: PyPI virt-firmware's virt-fw-vars (.ci/install.sh).
fn enroll_only(key: &SigningKey, vars: &Path) {
    let owner = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d";
    command("virt-fw-vars", |c| {
        c.args(["--input", OVMF_VARS_EMPTY, "--output"])
            .arg(vars)
            .args(["--set-pk", owner])
            .arg(&key.cert)
            .args(["--add-kek", owner])
            .arg(&key.cert)
            .args(["--add-db", owner])
            .arg(&key.cert)
            .arg("--secure-boot")
    });
}

/// The menu's rescue entry (the one after the pick entry) under Secure
/// Boot: GRUB cannot read the data partition, so the entry passes
/// `hiperiso.data=ESPDISK:1`; hiperiso-init mounts it, and `ls` in the
/// shell (typed on the keyboard, its output sent to the serial line) lists
/// the placeholder ISO.
fn rescue_shell_mounts_the_data_partition(dir: &Path, image: &Path, vars: &Path) {
    let _slot = crate::runtime_boot::VmSlot::acquire();
    let copy = dir.join("vars-rescue.fd");
    fs::copy(vars, &copy).unwrap();
    let firmware = Firmware::Uefi {
        code: OVMF_CODE.into(),
        vars: copy,
        secure: true,
    };
    let console = dir.join("console-rescue.log");
    let socket = dir.join("qmp-rescue.sock");
    let mut q = stick::firmware_vm(&firmware, image, &console);
    q.qmp("qmp", &socket);
    let mut child = stick::spawn_quiet(&q);
    let mut qmp = keyboard::connect_qmp(&mut child, &socket);
    let bytes = || fs::read(&console).unwrap_or_default();
    // The console's length once `what` shows after byte `after`; None
    // after BOOT_TIMEOUT.
    let wait_for = |what: &str, after: usize| {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let shown = bytes();
            let tail = shown.get(after..).unwrap_or_default();
            if tail.windows(what.len()).any(|w| w == what.as_bytes()) {
                return Some(shown.len());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let listed = wait_for("Rescue shell", 0).and_then(|_| {
        keyboard::press(&mut qmp, &["down"]);
        keyboard::press(&mut qmp, &["ret"]);
        let shell = wait_for("rescue shell requested", 0)?;
        std::thread::sleep(Duration::from_secs(2));
        let ls = format!("ls {DATA_MOUNT}/ISOs >/dev/ttyS0\n");
        keyboard::type_text(&mut qmp, &ls);
        wait_for("sb-test.iso", shell)
    });
    let _ = child.kill();
    let _ = child.wait();
    let shown = String::from_utf8_lossy(&bytes()).into_owned();
    assert!(
        listed.is_some(),
        "the rescue shell did not list the data partition's ISOs:\n{}",
        stick::tail(&shown, 40)
    );
    assert!(
        shown.contains("looking for the data partition ESPDISK:1"),
        "{}",
        stick::tail(&shown, 40)
    );
}

/// Boots `image` under Secure Boot OVMF (its variables a copy of `vars`)
/// until a console line contains `until`, or shim's refusal; returns
/// whether hiperiso-init ran.
fn boot(dir: &Path, image: &Path, name: &str, vars: &Path, until: &str) -> (bool, String) {
    // one of the two outer-VM slots of this test binary
    let _slot = crate::runtime_boot::VmSlot::acquire();
    let template = vars;
    let vars = dir.join(format!("vars-{name}.fd"));
    fs::copy(template, &vars).expect("Debian's ovmf (OVMF_VARS_4M*.fd)");
    let console = dir.join(format!("console-{name}.log"));
    let firmware = Firmware::Uefi {
        code: OVMF_CODE.into(),
        vars,
        secure: true,
    };
    let q = stick::firmware_vm(&firmware, image, &console);
    let (_, text) = stick::console_until(&q, &console, BOOT_TIMEOUT, |line| {
        line.contains(until)
            || line.contains("Security Violation")
            || line.contains("Verification failed")
    });
    let reached = text.lines().any(|l| l.contains(SECURE_BOOT_LINE));
    (reached, text)
}
