//! What GRUB hands to `hiperiso-init`, and what `hiperiso-init` and `run`
//! hand back to GRUB (DESIGN.md §5). grub.cfg spells these names in GRUB's
//! script (`overlays/esp/EFI/BOOT/grub.cfg`); a test reads it against them.

/// Kernel command line keys (GRUB → `hiperiso-init`).
pub mod cmdline {
    /// `hiperiso.iso=/ISOs/<file>`: the image to boot, on the data partition.
    pub const ISO: &str = "hiperiso.iso";
    /// `hiperiso.iso=pick`: GRUB could not list the images (Secure Boot:
    /// no exFAT in the signed GRUB), hiperiso-init chooses one.
    pub const ISO_PICK: &str = "pick";
    /// `hiperiso.data=UUID=<fs uuid>`: which partition is the data partition.
    pub const DATA: &str = "hiperiso.data";
    /// `hiperiso.data=ESPDISK:<n>`: partition n of the disk holding the ESP
    /// (`hiperiso.esp=`), whatever its label: the Secure Boot entry's, as
    /// the signed GRUB cannot read the data partition's UUID.
    pub const DATA_ON_ESP_DISK: &str = "ESPDISK:";
    /// The data partition's number in the stick's table (DESIGN.md §4:
    /// data first, ESP second, on GPT and MBR).
    pub const DATA_PARTITION_NUMBER: u32 = 1;
    /// `hiperiso.esp=UUID=<fs uuid>`: which partition is the ESP.
    pub const ESP: &str = "hiperiso.esp";
    /// `hiperiso_fallback=1`: TCG when `/dev/kvm` is unusable.
    pub const FALLBACK: &str = "hiperiso_fallback";
    /// The same, dotted like the other keys.
    pub const FALLBACK_DOTTED: &str = "hiperiso.fallback";
    /// `hiperiso.shell=1`: a rescue shell instead of a session.
    pub const SHELL: &str = "hiperiso.shell";
    /// `hiperiso.trace=none|standard|detailed|full`.
    pub const TRACE: &str = "hiperiso.trace";
    /// `hiperiso.after=poweroff|reboot|menu|shell`.
    pub const AFTER: &str = "hiperiso.after";
    /// `hiperiso.wait=<s>`: how long to wait for the data partition.
    pub const WAIT: &str = "hiperiso.wait";
    /// `hiperiso.pause=<s>`: the pause before powering off after a failure.
    pub const PAUSE: &str = "hiperiso.pause";
    /// `hiperiso.display=0|1`: show the guest on the host's screen.
    pub const DISPLAY: &str = "hiperiso.display";
}

/// GRUB environment block keys (`hiperiso/grubenv` on the data partition),
/// written by `hiperiso-init` from hiperiso.json and by `hiperiso-build run
/// --boot`, loaded by grub.cfg.
pub mod grubenv {
    /// The menu timeout in seconds.
    pub const TIMEOUT: &str = "hiperiso_timeout";
    /// The default entry: an ISO's file name under `/ISOs/`.
    pub const DEFAULT: &str = "hiperiso_default";
    /// `1`: the menu waits for a key (no timeout).
    pub const HOLD: &str = "hiperiso_hold";
}
