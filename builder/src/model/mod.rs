//! What the builder reads and writes: the manifest, the recipes, the lock
//! and the build record on the ESP.

pub mod build_record;
pub mod image_layer;
pub mod lock;
pub mod manifest;
pub mod recipe;
pub mod source;
pub mod spans;
