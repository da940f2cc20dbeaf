//! Where things live on the stick (DESIGN.md §4). Paths are relative to the
//! root of their partition, with `/` separators, as GRUB, the FAT and exFAT
//! readers and the Linux mounts all take them.

/// The ESP (FAT): GRUB, the host kernel and initramfs, firmware.
pub mod esp {
    /// The removable-media boot path every UEFI firmware tries.
    pub const BOOT_EFI: &str = "EFI/BOOT/BOOTX64.EFI";
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
    /// JSON Schema of `CONFIG`, for editors (`"$schema": "hiperiso.schema.json"`).
    pub const CONFIG_SCHEMA: &str = "hiperiso/hiperiso.schema.json";
    /// GRUB's environment block, written by hiperiso-init for the next menu.
    pub const GRUBENV: &str = "hiperiso/grubenv";
    /// One directory per session, `<iso-stem>_<YYYYMMDDTHHMMSSZ>`.
    pub const LOGS_DIR: &str = "hiperiso/logs";
    /// One JSON line per finished session.
    pub const INDEX: &str = "hiperiso/logs/index.jsonl";
}
