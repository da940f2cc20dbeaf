//! The cross-crate integration and end-to-end tests, one binary (uv's
//! `tests/it` layout); shared helpers live in `tests/support` (the crate's
//! library). At most two tests run at once (the test harness's default on
//! two cores); the VM-booting modules limit their own VMs further.

mod bios_boot;
mod debian_boot;
mod debian_lock;
mod display;
mod display_bench;
mod e2e;
mod exfat_kernel;
mod fetch;
mod fuzz_smoke;
mod grub_console;
mod layers;
mod payload_cache;
mod runtime_boot;
mod secure_boot;
mod session_schema;
mod verdicts;
