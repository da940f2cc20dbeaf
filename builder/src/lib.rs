//! `hiperiso-build`: the declarative builder for hiperiso sticks.
//!
//! The CLI (`cli.rs`) only parses arguments; every verb's logic lives in a
//! library module so it can be tested without a process boundary.

pub mod debian;
pub mod cpio;
pub mod elf;
pub mod initramfs;
pub mod kmod;
pub mod lock;
pub mod payload;
