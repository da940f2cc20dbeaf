//! Any bytes through both trace decoders, the summary and the serial
//! scanner: an error is fine, a panic or a hang is not.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hiperiso_runtime_fuzz::targets::trace_decode(data));
