//! A stick from anywhere, as `install --update`, `inspect` and
//! `hiperiso-log` meet it: the GPT or MBR table, then the recogniser
//! (which reads the ESP's FAT and the data partition's exFAT).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hiperiso_runtime_fuzz::targets::disk_table(data));
