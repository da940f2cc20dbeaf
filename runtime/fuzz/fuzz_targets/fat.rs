//! The ESP's FAT reader on any volume: open, walk, read every file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hiperiso_runtime_fuzz::targets::fat(data));
