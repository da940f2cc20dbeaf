//! hiperiso-build's integration tests (the binary, the step runner, recipes), one binary.

// The same tiny HTTP server the workspace tests use.
#[path = "../../../tests/support/http.rs"]
#[allow(dead_code)]
mod http;

mod cli;
mod disk_cli;
mod doctor_cli;
mod image_artifact;
mod recipes;
mod registry;
mod steps;
mod steps_locked;
