//! A session whose serial.log is any bytes, analyzed as `hiperiso-log`
//! does: the console scan, the verdict, the hints and the report files.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hiperiso_runtime_fuzz::targets::serial_report(data));
