//! `hiperiso-build`: the declarative builder for hiperiso sticks.
//!
//! The CLI (`cli.rs`) only parses arguments; every verb's logic lives in a
//! library module so it can be tested without a process boundary.
