//! `hiperiso/hiperiso.json` from any stick: loading never fails, and the
//! settings for an image come out of any overrides.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hiperiso_runtime_fuzz::targets::config(data));
