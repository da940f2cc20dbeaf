//! The data partition's exFAT reader on any volume: open, usage, walk,
//! read every file (as `hiperiso-log` and `install --update` do).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hiperiso_runtime_fuzz::targets::exfat(data));
