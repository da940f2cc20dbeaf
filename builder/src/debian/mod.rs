//! The Debian repository client: signed Release files, Packages and Sources
//! indices, dependency closures and safe .deb unpacking.

pub mod closure;
pub mod control;
pub mod deb;
pub mod packages;
pub mod release;
pub mod repo;
pub mod resolve;
pub mod signature;
pub mod version;
