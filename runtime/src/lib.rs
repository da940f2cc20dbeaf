//! The stick's runtime: session files, runtime config, QEMU command line,
//! trace and serial parsers. Binaries: `hiperiso-init` and `hiperiso-log`.

pub mod analyze;
pub mod blockid;
pub mod cmdline;
pub mod config;
pub mod eltorito;
pub mod evdev;
pub mod fbdev;
pub mod glob;
pub mod grubenv;
pub mod hw;
pub mod init;
pub mod kvm;
pub mod logtrace;
pub mod modules;
pub mod patterns;
pub mod qemu;
pub mod qmp;
pub mod rfb;
pub mod scale;
pub mod serial;
pub mod session;
pub mod sessions;
pub mod simpletrace;
pub mod sys;
pub mod trace_events;
pub mod trace_summary;
pub mod viewer;
