//! Where things live on the stick (DESIGN.md §4). Paths are relative to the
//! root of their partition, with `/` separators, as GRUB, the FAT and exFAT
//! readers and the Linux mounts all take them.

/// The ESP (FAT): GRUB, the host kernel and initramfs, firmware.
pub mod esp {
    /// The removable-media boot path every UEFI firmware tries.
    pub const BOOT_EFI: &str = "EFI/BOOT/BOOTX64.EFI";
    /// Debian's signed GRUB beside the signed shim (which is then
    /// BOOT_EFI): shim loads `grubx64.efi` from its own directory.
    pub const SIGNED_GRUB_EFI: &str = "EFI/BOOT/grubx64.efi";
    /// Where Debian's signed GRUB reads its config (its built-in prefix is
    /// /EFI/debian): a stub that hands over to GRUB_CFG.
    pub const DEBIAN_GRUB_CFG: &str = "EFI/debian/grub.cfg";
    /// GRUB modules the signed GRUB may load when Secure Boot is off.
    pub const GRUB_MODULE_DIR: &str = "EFI/BOOT/x86_64-efi";
    /// GRUB's directory (`-p /EFI/BOOT`): its config and fonts.
    pub const GRUB_DIR: &str = "EFI/BOOT";
    pub const GRUB_CFG: &str = "EFI/BOOT/grub.cfg";
    /// hiperiso's own files.
    pub const HIPERISO_DIR: &str = "EFI/hiperiso";
    pub const VMLINUZ: &str = "EFI/hiperiso/vmlinuz";
    pub const INITRAMFS: &str = "EFI/hiperiso/initramfs.cpio.zst";
    pub const OVMF_CODE: &str = "EFI/hiperiso/OVMF_CODE.fd";
    pub const OVMF_VARS: &str = "EFI/hiperiso/OVMF_VARS.fd";
    pub const HIPERISO_LOG: &str = "EFI/hiperiso/hiperiso-log";
    /// `trace-{standard,detailed,full}.events`.
    pub const TRACE_DIR: &str = "EFI/hiperiso/trace";
    /// GRUB's i386-pc boot code for legacy BIOS: `boot.img` goes into the
    /// MBR, `core.img` into the gap before the first partition
    /// (hiperiso_installer::bios_boot); absent when the payload has none.
    pub const BIOS_BOOT_IMG: &str = "EFI/hiperiso/bios/boot.img";
    pub const BIOS_CORE_IMG: &str = "EFI/hiperiso/bios/core.img";
    /// The build record; read through [`crate::build_json`].
    pub const BUILD_JSON: &str = "EFI/hiperiso/build.json";
}

/// The data partition (exFAT): the user's ISOs, config and sessions.
pub mod data {
    /// The images the GRUB menu lists.
    pub const ISOS_DIR: &str = "ISOs";
    pub const HIPERISO_DIR: &str = "hiperiso";
    /// The runtime config (`hiperiso.json`), created by the user from the example.
    pub const CONFIG: &str = "hiperiso/hiperiso.json";
    pub const CONFIG_EXAMPLE: &str = "hiperiso/hiperiso.json.example";
    /// Per-ISO override files, `NAME.json` (see `Config::add_override_file`).
    pub const ISO_OVERRIDES_DIR: &str = "hiperiso/iso_overrides";
    /// JSON Schema of `CONFIG`, for editors (`"$schema": "hiperiso.schema.json"`).
    pub const CONFIG_SCHEMA: &str = "hiperiso/hiperiso.schema.json";
    /// GRUB's environment block, written by hiperiso-init for the next menu.
    pub const GRUBENV: &str = "hiperiso/grubenv";
    /// One directory per session, `<iso-stem>_<YYYYMMDDTHHMMSSZ>`.
    pub const LOGS_DIR: &str = "hiperiso/logs";
    /// One JSON line per finished session.
    pub const INDEX: &str = "hiperiso/logs/index.jsonl";
}

/// Files of the initramfs (paths below its root).
pub mod initramfs {
    /// The kernel's `.config`, gzipped, for a kernel without
    /// `/proc/config.gz` (Debian's: the package's `boot/config-<version>`).
    pub const KERNEL_CONFIG: &str = "etc/hiperiso/kernel-config.gz";
}
