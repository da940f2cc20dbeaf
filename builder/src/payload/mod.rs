//! The ESP payload: initramfs (cpio, ELF and kernel-module closures) and
//! the ESP tree, from the profile's built steps or Debian packages, and
//! the trees an image is made of.

pub mod base;
pub mod cached;
pub mod cpio;
pub mod elf;
pub mod esp;
pub mod from_packages;
pub mod from_steps;
pub mod grub;
pub mod initramfs;
pub mod kmod;
pub mod secure_boot;
pub mod trees;
