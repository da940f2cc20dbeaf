//! hiperiso-init's ISO 9660 / El Torito reader on any image a user copies
//! onto the stick (a sparse disk; see src/lib.rs), and the boot catalog
//! parser on the input's first sectors.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hiperiso_runtime_fuzz::targets::eltorito(data));
