//! The stick's runtime: session files, runtime config, QEMU command line,
//! trace and serial parsers. Binaries: `hiperiso-init` and `hiperiso-log`.

pub mod logtrace;
pub mod simpletrace;
pub mod trace_events;
pub mod trace_summary;
pub mod patterns;
pub mod serial;
