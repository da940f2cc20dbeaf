//! Is KVM really usable? Opening `/dev/kvm` is not enough (on some hosts it
//! exists but cannot run guests), so we ask for the API version and create
//! a VM, exactly as QEMU will.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_CHECK_EXTENSION: libc::c_ulong = 0xAE03;
/// The only KVM API version there has ever been.
pub const KVM_API_VERSION: i32 = 12;

/// Capabilities recorded in `kvm_caps.json` (name, KVM_CAP_* number).
const CAPABILITIES: &[(&str, libc::c_ulong)] = &[
    ("irqchip", 0),
    ("hlt", 1),
    ("user_memory", 3),
    ("set_tss_addr", 4),
    ("ext_cpuid", 7),
    ("clocksource", 8),
    ("nr_vcpus", 9),
    ("nr_memslots", 10),
    ("pit", 11),
    ("mp_state", 14),
    ("coalesced_mmio", 15),
    ("sync_mmu", 16),
    ("iommu", 18),
    ("irq_routing", 25),
    ("pit2", 33),
    ("hyperv", 44),
    ("xsave", 55),
    ("max_vcpus", 66),
    ("tsc_deadline_timer", 72),
    ("x86_smm", 117),
    ("split_irqchip", 121),
    ("max_vcpu_id", 128),
    ("immediate_exit", 136),
    ("nested_state", 157),
];

/// Why KVM is not usable.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: KVM_GET_API_VERSION failed")]
    ApiVersion {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: KVM API version {found}, expected {KVM_API_VERSION}")]
    WrongApiVersion { path: PathBuf, found: i32 },
    #[error(
        "{path}: KVM_CREATE_VM failed (virtualization disabled in firmware, or nested virtualization unavailable?)"
    )]
    CreateVm {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A working KVM, with what it supports; serialized as `kvm_caps.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvmInfo {
    pub device: String,
    pub api_version: i32,
    /// KVM_CHECK_EXTENSION results on the VM fd (0: unsupported).
    pub capabilities: BTreeMap<String, i32>,
    /// `kvm_intel` or `kvm_amd`, whichever is loaded.
    pub vendor_module: Option<String>,
    /// The vendor module's `nested` parameter.
    pub nested: Option<String>,
}

fn ioctl(fd: &impl AsRawFd, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: the KVM ioctls used here take an integer argument (no pointer).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Open `device`, check the API version and create (then drop) a VM.
pub fn check_kvm(device: &Path) -> Result<KvmInfo, KvmError> {
    let path = device.to_path_buf();
    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|source| KvmError::Open {
            path: path.clone(),
            source,
        })?;
    let api_version =
        ioctl(&kvm, KVM_GET_API_VERSION, 0).map_err(|source| KvmError::ApiVersion {
            path: path.clone(),
            source,
        })?;
    if api_version != KVM_API_VERSION {
        return Err(KvmError::WrongApiVersion {
            path,
            found: api_version,
        });
    }
    let vm_fd = ioctl(&kvm, KVM_CREATE_VM, 0).map_err(|source| KvmError::CreateVm {
        path: path.clone(),
        source,
    })?;
    // SAFETY: KVM_CREATE_VM returned a fresh file descriptor we now own.
    let vm = unsafe { OwnedFd::from_raw_fd(vm_fd) };
    let capabilities = CAPABILITIES
        .iter()
        .map(|&(name, cap)| {
            (
                name.to_string(),
                ioctl(&vm, KVM_CHECK_EXTENSION, cap).unwrap_or(0),
            )
        })
        .collect();
    let vendor_module = ["kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| Path::new("/sys/module").join(m).exists())
        .map(str::to_string);
    let nested = vendor_module.as_ref().and_then(|m| {
        std::fs::read_to_string(format!("/sys/module/{m}/parameters/nested"))
            .ok()
            .map(|s| s.trim().to_string())
    });
    Ok(KvmInfo {
        device: device.display().to_string(),
        api_version,
        capabilities,
        vendor_module,
        nested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_an_open_error() {
        let err = check_kvm(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(matches!(err, KvmError::Open { .. }));
        assert!(err.to_string().contains("/nonexistent/kvm"));
    }

    #[test]
    fn a_non_kvm_device_fails_the_ioctl() {
        let err = check_kvm(Path::new("/dev/null")).unwrap_err();
        assert!(matches!(err, KvmError::ApiVersion { .. }), "{err}");
    }

    /// On this host /dev/kvm may or may not work; either way the answer must
    /// be a clean Ok or a typed error, and an Ok must carry capabilities.
    #[test]
    fn host_kvm_answers() {
        if !hiperiso_prereq::check(
            Path::new("/dev/kvm").exists(),
            "/dev/kvm",
            "load kvm_intel or kvm_amd (`modprobe kvm_amd`), or run on a host with virtualization",
        ) {
            return;
        }
        match check_kvm(Path::new("/dev/kvm")) {
            Ok(info) => {
                assert_eq!(info.api_version, KVM_API_VERSION);
                assert!(info.capabilities["user_memory"] > 0);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
