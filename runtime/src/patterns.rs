//! The one table of what `hiperiso-log` recognizes in a boot's logs: boot
//! stages and failures, with the domain a failure belongs to and the hint
//! shown for it. To teach the analyzer something new, add a row here.
//!
//! Matching is a plain substring test on a cleaned line (ANSI escapes and
//! control characters removed, see `serial::clean_line`).

use serde::Serialize;

/// Boot stages, in the order a successful boot passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The firmware printed its banner or boot manager messages.
    Firmware,
    /// The firmware started a boot option (the CD).
    BootDevice,
    /// A bootloader (GRUB, ISOLINUX, systemd-boot, the EFI stub) ran.
    Bootloader,
    /// The guest kernel started.
    Kernel,
    /// The kernel handed over to init.
    Init,
    /// Userspace came up: a login prompt, a multi-user target, a marker.
    Userspace,
    /// The guest powered off, halted or rebooted.
    Shutdown,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Firmware => "firmware",
            Stage::BootDevice => "boot_device",
            Stage::Bootloader => "bootloader",
            Stage::Kernel => "kernel",
            Stage::Init => "init",
            Stage::Userspace => "userspace",
            Stage::Shutdown => "shutdown",
        }
    }
}

/// Where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// The stick's host side: KVM, the ISO file, QEMU itself.
    Host,
    Firmware,
    Bootloader,
    Kernel,
    /// Init, the initramfs, or userspace services.
    Userspace,
    /// The guest shut itself down or reset before reaching userspace.
    GuestShutdown,
}

impl Domain {
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Host => "host",
            Domain::Firmware => "firmware",
            Domain::Bootloader => "bootloader",
            Domain::Kernel => "kernel",
            Domain::Userspace => "userspace",
            Domain::GuestShutdown => "guest_shutdown",
        }
    }
}

/// How bad a failure line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth counting and quoting; the boot may still succeed.
    Error,
    /// The boot cannot go on from here.
    Fatal,
}

/// Which log a row applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The guest's serial console (`serial.log`) and the firmware's debug
    /// log (`firmware.log`).
    Guest,
    /// QEMU's own messages (`qemu.stderr`) and the QMP events in
    /// `session.json`'s `guest_events`.
    Qemu,
}

/// What a row means when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    Stage(Stage),
    Failure {
        id: &'static str,
        domain: Domain,
        severity: Severity,
        hint: Option<&'static str>,
    },
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Pattern {
    pub source: Source,
    /// Matched as a substring of the cleaned line.
    pub needle: &'static str,
    pub meaning: Meaning,
}

const fn stage(needle: &'static str, stage: Stage) -> Pattern {
    Pattern {
        source: Source::Guest,
        needle,
        meaning: Meaning::Stage(stage),
    }
}

const fn failure(
    source: Source,
    needle: &'static str,
    id: &'static str,
    domain: Domain,
    severity: Severity,
    hint: Option<&'static str>,
) -> Pattern {
    Pattern {
        source,
        needle,
        meaning: Meaning::Failure {
            id,
            domain,
            severity,
            hint,
        },
    }
}

use Domain::*;
use Severity::*;
use Source::*;

const HINT_NO_UEFI_BOOT: &str = "the UEFI firmware found nothing to boot: this ISO may have no UEFI boot entry; set \"firmware\": \"bios\" for it in iso_overrides of hiperiso/hiperiso.json";
const HINT_SECURE_BOOT: &str = "the firmware refused the bootloader's signature: turn Secure Boot off for this ISO (iso_overrides) or use a signed ISO";
const HINT_BIOS_NO_BOOT: &str = "SeaBIOS found nothing to boot: this ISO may be UEFI-only; set \"firmware\": \"uefi\" for it in iso_overrides";
const HINT_NO_ROOT: &str = "the kernel could not mount its root filesystem: the ISO's initramfs may lack a driver for the AHCI CD-ROM, or root= on its kernel command line is wrong";
const HINT_NO_INIT: &str = "the kernel found no init program: check init= on the guest kernel command line and the initramfs contents";
const HINT_PANIC: &str =
    "the guest kernel panicked; the quoted lines before the panic usually name the cause";
const HINT_LIVE_MEDIUM: &str = "the live system did not find its own medium: it may expect a USB or IDE CD-ROM rather than AHCI, or more RAM";
const HINT_EMERGENCY: &str = "userspace dropped to an emergency shell: a service or mount failed; the first quoted errors name it";
const HINT_KVM: &str = "QEMU could not use KVM: enable virtualization (VT-x/AMD-V) in the PC's firmware setup, or boot with hiperiso_fallback=1 to use TCG";
const HINT_ISO: &str =
    "QEMU could not open the ISO: check that the file under /ISOs/ is complete and readable";
const HINT_OOM: &str = "the guest ran out of memory: raise \"ram\" for this ISO in iso_overrides";
const HINT_GRUB: &str = "GRUB inside the ISO reported an error: the ISO's own grub.cfg may expect a different boot device";
const HINT_TRIPLE_FAULT: &str =
    "the guest CPU reset on a triple fault: try TCG (hiperiso_fallback=1) or fewer cpu_features";

/// The table. Order matters only for display: every row is tried.
#[rustfmt::skip]
pub const PATTERNS: &[Pattern] = &[
    // Firmware banners and boot manager.
    stage("SeaBIOS (version", Stage::Firmware),
    stage("BdsDxe:", Stage::Firmware),
    stage("Press ESC in", Stage::Firmware),
    stage("Booting from DVD/CD", Stage::BootDevice),
    stage("Booting from CD-Rom", Stage::BootDevice),
    stage("BdsDxe: starting Boot", Stage::BootDevice),
    // Bootloaders.
    stage("GNU GRUB", Stage::Bootloader),
    stage("Welcome to GRUB", Stage::Bootloader),
    stage("ISOLINUX ", Stage::Bootloader),
    stage("SYSLINUX ", Stage::Bootloader),
    stage("systemd-boot", Stage::Bootloader),
    stage("EFI stub: ", Stage::Bootloader),
    stage("Loading Linux ", Stage::Bootloader),
    stage("Loading initial ramdisk", Stage::Bootloader),
    // Kernel.
    stage("Linux version ", Stage::Kernel),
    stage("Booting Linux on", Stage::Kernel),
    stage("FreeBSD is a registered trademark", Stage::Kernel),
    // Init.
    // The kernel's "Run /init as init process" (any path).
    stage(" as init process", Stage::Init),
    stage("systemd[1]: ", Stage::Init),
    stage("INIT: version", Stage::Init),
    stage("Loading, please wait...", Stage::Init),
    // Userspace.
    stage(" login: ", Stage::Userspace),
    stage("Reached target Multi-User System", Stage::Userspace),
    stage("Reached target multi-user.target", Stage::Userspace),
    stage("Reached target Graphical Interface", Stage::Userspace),
    stage("Please press Enter to activate this console", Stage::Userspace),
    stage("HIPERISO-GUEST-READY", Stage::Userspace),
    // Shutdown.
    stage("reboot: Power down", Stage::Shutdown),
    stage("reboot: Restarting system", Stage::Shutdown),
    stage("reboot: System halted", Stage::Shutdown),
    stage("System halted", Stage::Shutdown),
    // Firmware failures.
    failure(Guest, "No bootable option or device was found", "uefi_no_boot_option", Firmware, Fatal, Some(HINT_NO_UEFI_BOOT)),
    failure(Guest, "No bootable device", "bios_no_bootable_device", Firmware, Fatal, Some(HINT_BIOS_NO_BOOT)),
    failure(Guest, "Boot failed: not a bootable disk", "bios_not_bootable", Firmware, Error, Some(HINT_BIOS_NO_BOOT)),
    failure(Guest, "Boot failed: Could not read", "bios_read_failed", Firmware, Error, None),
    failure(Guest, ": Access Denied", "secure_boot_denied", Firmware, Fatal, Some(HINT_SECURE_BOOT)),
    failure(Guest, "BdsDxe: failed to load Boot", "uefi_boot_option_failed", Firmware, Error, Some(HINT_NO_UEFI_BOOT)),
    failure(Guest, "UEFI Interactive Shell", "uefi_shell_fallback", Firmware, Fatal, Some(HINT_NO_UEFI_BOOT)),
    // Bootloader failures.
    failure(Guest, "grub rescue>", "grub_rescue", Bootloader, Fatal, Some(HINT_GRUB)),
    failure(Guest, "error: file `", "grub_file_not_found", Bootloader, Error, Some(HINT_GRUB)),
    failure(Guest, "error: no such device", "grub_no_such_device", Bootloader, Error, Some(HINT_GRUB)),
    failure(Guest, "Could not find kernel image", "isolinux_no_kernel", Bootloader, Fatal, None),
    failure(Guest, "Failed to open \\EFI\\", "efi_file_missing", Bootloader, Error, None),
    // Kernel failures.
    // The specific panics come before the generic one: on a line matching
    // several rows, the first of the most severe wins.
    failure(Guest, "VFS: Unable to mount root fs", "no_root_fs", Kernel, Fatal, Some(HINT_NO_ROOT)),
    failure(Guest, "No working init found", "no_init", Kernel, Fatal, Some(HINT_NO_INIT)),
    failure(Guest, "Requested init ", "init_failed", Kernel, Fatal, Some(HINT_NO_INIT)),
    failure(Guest, "Kernel panic - not syncing", "kernel_panic", Kernel, Fatal, Some(HINT_PANIC)),
    failure(Guest, "Failed to execute ", "init_exec_failed", Kernel, Error, Some(HINT_NO_INIT)),
    failure(Guest, "Out of memory: Killed process", "oom", Kernel, Error, Some(HINT_OOM)),
    failure(Guest, "BUG: ", "kernel_bug", Kernel, Error, None),
    failure(Guest, "Oops: ", "kernel_oops", Kernel, Error, None),
    failure(Guest, "general protection fault", "kernel_gpf", Kernel, Error, None),
    failure(Guest, "I/O error, dev ", "io_error", Kernel, Error, None),
    // Init and userspace failures.
    failure(Guest, "You are in emergency mode", "emergency_mode", Userspace, Fatal, Some(HINT_EMERGENCY)),
    failure(Guest, "Give root password for maintenance", "maintenance_shell", Userspace, Fatal, Some(HINT_EMERGENCY)),
    failure(Guest, "Gave up waiting for root file system device", "initramfs_no_root", Userspace, Fatal, Some(HINT_NO_ROOT)),
    failure(Guest, "Unable to find a medium containing a live file system", "live_medium_missing", Userspace, Fatal, Some(HINT_LIVE_MEDIUM)),
    failure(Guest, "[FAILED] Failed to start", "service_failed", Userspace, Error, None),
    // QEMU / host failures.
    failure(Qemu, "Could not access KVM kernel module", "kvm_unavailable", Host, Fatal, Some(HINT_KVM)),
    failure(Qemu, "failed to initialize kvm", "kvm_init_failed", Host, Fatal, Some(HINT_KVM)),
    failure(Qemu, "failed to initialize KVM", "kvm_init_failed", Host, Fatal, Some(HINT_KVM)),
    failure(Qemu, "Could not open '", "qemu_open_failed", Host, Fatal, Some(HINT_ISO)),
    failure(Qemu, " GUEST_PANICKED", "guest_panicked", Kernel, Fatal, Some(HINT_PANIC)),
    failure(Qemu, "Triple fault", "triple_fault", GuestShutdown, Error, Some(HINT_TRIPLE_FAULT)),
    failure(Qemu, "terminating on signal", "qemu_killed", Host, Error, None),
];

/// Every row of `source` whose needle is in `line`.
pub fn matches(source: Source, line: &str) -> impl Iterator<Item = &'static Pattern> + '_ {
    PATTERNS
        .iter()
        .filter(move |p| p.source == source && line.contains(p.needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_ids_are_unique_per_meaning() {
        let mut seen: Vec<(&str, Domain, Severity)> = Vec::new();
        for p in PATTERNS {
            if let Meaning::Failure {
                id,
                domain,
                severity,
                ..
            } = p.meaning
            {
                if let Some(other) = seen.iter().find(|s| s.0 == id) {
                    assert_eq!((other.1, other.2), (domain, severity), "{id}");
                }
                seen.push((id, domain, severity));
            }
        }
    }

    #[test]
    fn matching_respects_the_source() {
        let hits: Vec<_> = matches(Guest, "[    1.0] Kernel panic - not syncing: x").collect();
        assert_eq!(hits.len(), 1);
        let hits: Vec<_> = matches(
            Guest,
            "Kernel panic - not syncing: Requested init /x failed",
        )
        .collect();
        assert_eq!(hits.len(), 2);
        assert!(matches(Qemu, "Kernel panic - not syncing").next().is_none());
    }
}
