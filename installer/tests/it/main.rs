//! hiperiso-installer's integration tests (disks, exFAT, FAT tools, UEFI boot), one binary.

mod disk;
mod exfat;
mod fat_tools;
mod uefi_boot;
