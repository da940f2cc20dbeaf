//! Virtualization: QEMU, KVM with the VM `run` really starts, nested
//! virtualization for the stick's own guest, OVMF.

use std::fs;
use std::process::{Command, Stdio};

use super::Check;
use crate::vm;

pub const QEMU: &str = "qemu";
pub const KVM: &str = "kvm";
pub const NESTED: &str = "nested-virt";
pub const OVMF: &str = "ovmf";

/// QEMU answers `--version`.
pub fn qemu() -> Check {
    let program = vm::qemu_program();
    let output = Command::new(&program)
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    let result = match output {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(error) => Err(error.to_string()),
    };
    qemu_check(&program, result)
}

/// The verdict on `<qemu> --version`.
pub fn qemu_check(program: &str, version: Result<String, String>) -> Check {
    match version {
        Ok(version) => Check::ok(QEMU, format!("{program}: {version}")),
        Err(error) => Check::fail(QEMU, format!("cannot run {program}: {error}"))
            .with_fix("apt-get install qemu-system-x86 (or set $HIPERISO_QEMU to the QEMU binary)"),
    }
}

/// KVM, probed with the outer VM's own probe (`vm::probe_kvm`) on the very
/// VM `run` starts (q35, `-cpu host`, OVMF, `run`'s memory), with an empty
/// scratch disk as the stick: the firmware prints before it looks for one.
/// No KVM is a warning, since `run` then falls back to TCG.
pub fn kvm() -> Check {
    kvm_check(probe())
}

fn probe() -> Result<(), String> {
    let scratch = tempfile::Builder::new()
        .prefix("hiperiso-doctor-")
        .tempdir()
        .map_err(|error| format!("cannot create a scratch directory: {error}"))?;
    let (ovmf_code, ovmf_vars) = vm::find_ovmf().map_err(|error| error.to_string())?;
    let image = scratch.path().join("probe.img");
    fs::File::create(&image)
        .and_then(|f| f.set_len(1 << 20))
        .map_err(|error| format!("cannot create {}: {error}", image.display()))?;
    let probe_vm = vm::Vm {
        qemu: vm::qemu_program(),
        image,
        ram_mb: vm::DEFAULT_RAM_MB,
        cpus: 2,
        accel: vm::Accel::Kvm,
        console: vm::Console::File {
            log: scratch.path().join("console.log"),
        },
        ovmf_code,
        ovmf_vars,
        qmp: None,
        snapshot: true,
    };
    vm::probe_kvm(&probe_vm, scratch.path())
}

/// The verdict on the KVM probe.
pub fn kvm_check(probe: Result<(), String>) -> Check {
    match probe {
        Ok(()) => Check::ok(
            KVM,
            "the VM `run` starts (q35, -cpu host, OVMF) runs with KVM",
        ),
        Err(reason) => {
            let fix = if reason.contains("/dev/kvm") {
                "load kvm_amd or kvm_intel, enable virtualization in the firmware, and make \
                 /dev/kvm read-writable for you (the `kvm` group); or accept TCG"
            } else {
                "this host's KVM cannot run `run`'s VM (often broken nested virtualization): \
                 accept TCG, or `run --accel tcg` to skip the probe"
            };
            Check::warn(
                KVM,
                format!(
                    "KVM not usable ({reason}): `run` falls back to TCG with `-cpu EPYC` (slower)"
                ),
            )
            .with_fix(fix)
        }
    }
}

/// Nested virtualization, read from `/sys/module/kvm_{amd,intel}`.
pub fn nested(kvm_usable: bool) -> Check {
    let read = |module: &str| {
        fs::read_to_string(format!("/sys/module/{module}/parameters/nested"))
            .ok()
            .map(|s| s.trim().to_string())
    };
    nested_check(
        kvm_usable,
        read("kvm_amd").as_deref(),
        read("kvm_intel").as_deref(),
    )
}

fn enabled(value: &str) -> bool {
    matches!(value, "1" | "Y" | "y")
}

/// The verdict on nested virtualization: it matters only when the outer
/// VM runs with KVM; under TCG the EPYC CPU model gives the stick SVM.
pub fn nested_check(kvm_usable: bool, amd: Option<&str>, intel: Option<&str>) -> Check {
    if !kvm_usable {
        return Check::ok(
            NESTED,
            "the outer VM runs under TCG with `-cpu EPYC`, which provides SVM: the stick's \
             guest gets KVM inside it",
        );
    }
    let (module, value) = match (amd, intel) {
        (Some(v), _) => ("kvm_amd", v),
        (None, Some(v)) => ("kvm_intel", v),
        (None, None) => {
            return Check::warn(
                NESTED,
                "neither kvm_amd nor kvm_intel is loaded: the stick's guest runs under TCG",
            )
            .with_fix("modprobe kvm_amd nested=1 (or kvm_intel nested=1)");
        }
    };
    if enabled(value) {
        Check::ok(
            NESTED,
            format!("{module} nested={value}: the stick's guest gets KVM"),
        )
    } else {
        Check::warn(
            NESTED,
            format!("{module} nested={value}: the stick's guest runs under TCG (slow)"),
        )
        .with_fix(format!(
            "modprobe -r {module} && modprobe {module} nested=1 (persist with \
             `options {module} nested=1` in /etc/modprobe.d/kvm.conf)"
        ))
    }
}

/// OVMF for `run`, where `vm::find_ovmf` looks.
pub fn ovmf() -> Check {
    match vm::find_ovmf() {
        Ok((code, vars)) => Check::ok(OVMF, format!("{} + {}", code.display(), vars.display())),
        Err(error) => Check::fail(OVMF, format!("`run` needs OVMF: {error}"))
            .with_fix("apt-get install ovmf (or set $HIPERISO_OVMF_CODE and $HIPERISO_OVMF_VARS)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn no_kvm_is_a_warning_with_the_reason() {
        let check = kvm_check(Err("/dev/kvm does not exist".into()));
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("/dev/kvm does not exist"));
        assert!(check.detail.contains("TCG"));
        assert!(check.fix.unwrap().contains("kvm` group"));
        let msr = kvm_check(Err("failed to set MSR 0x10a".into()));
        assert_eq!(msr.status, Status::Warn);
        assert!(msr.fix.unwrap().contains("--accel tcg"));
        assert_eq!(kvm_check(Ok(())).status, Status::Ok);
    }

    #[test]
    fn nested_matters_only_under_kvm() {
        let tcg = nested_check(false, Some("0"), None);
        assert_eq!(tcg.status, Status::Ok);
        assert!(tcg.detail.contains("EPYC"));
        assert_eq!(nested_check(true, Some("1"), None).status, Status::Ok);
        assert_eq!(nested_check(true, None, Some("Y")).status, Status::Ok);
        let off = nested_check(true, None, Some("N"));
        assert_eq!(off.status, Status::Warn);
        assert!(off.fix.unwrap().contains("kvm_intel nested=1"));
        assert_eq!(nested_check(true, None, None).status, Status::Warn);
    }

    #[test]
    fn missing_qemu_fails_with_the_package() {
        let check = qemu_check("qemu-system-x86_64", Err("not found".into()));
        assert_eq!(check.status, Status::Fail);
        assert!(check.fix.unwrap().contains("qemu-system-x86"));
    }
}
