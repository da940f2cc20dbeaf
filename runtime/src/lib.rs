//! The stick's runtime: `hiperiso-init` (PID 1 on the stick) and the
//! analysis behind `hiperiso-log`.
//!
//! Analysis side (always compiled; what the builder uses):
//! - [`session_list`]: finding and listing recorded sessions (on a mounted
//!   data partition or inside a stick image); their files' schemas are
//!   `hiperiso_stick::session`.
//! - [`analyze`]: a session's report, from [`serial`] (console scan against
//!   [`patterns`]) and the traces ([`trace_events`] catalogs,
//!   [`simpletrace`] and [`logtrace`] readers, [`trace_summary`]).
//! - [`config`] (`hiperiso.json`, with [`glob`] overrides; [`config_check`]
//!   names each problem's line and key), [`cmdline`]
//!   (the kernel command line), [`grubenv`], [`eltorito`],
//!   [`qemu`] (the QEMU command line).
//!
//! PID 1 side (feature `init`, on by default; binary `hiperiso-init`):
//! - `init`: `boot` (mounts, modules, finding the partitions in
//!   `partitions`), `steps` (one session, step by step, recorded by
//!   `recording::Recording`), `firmware` (UEFI or BIOS, OVMF/SeaBIOS),
//!   `vm` (spawning and supervising QEMU), `guest_display` (the viewer or
//!   the serial mirror while the guest runs).
//! - `display`: the guest's screen on the host's framebuffer (`rfb`,
//!   `scale`, `fbdev`), keyboard and mouse (`evdev`), hotkeys (`viewer`).
//! - `hw` (host and guest inventory), `kvm`, `qmp`, `modules`, `sys`
//!   (the system calls PID 1 needs).
//!
//! A crate that only analyzes sessions depends on this one with
//! `default-features = false` and compiles none of the PID 1 side.

pub mod analyze;
pub mod cmdline;
pub mod config;
pub mod config_check;
pub mod contact;
pub mod eltorito;
pub mod glob;
pub mod grubenv;
pub mod logtrace;
pub mod patterns;
pub mod picture;
pub mod qemu;
pub mod screens;
pub mod secure_boot;
pub mod serial;
pub mod session_list;
pub mod simpletrace;
pub mod trace_events;
pub mod trace_summary;

#[cfg(feature = "init")]
pub mod display;
#[cfg(feature = "init")]
pub mod hw;
#[cfg(feature = "init")]
pub mod init;
#[cfg(feature = "init")]
pub mod kvm;
#[cfg(feature = "init")]
pub mod modules;
#[cfg(feature = "init")]
pub mod qmp;
#[cfg(feature = "init")]
pub mod sys;
