//! Every external byte: the content-addressed store, the fetcher, the
//! mirrors, OCI registries, upstream version watches and the manifest's
//! source pins.

pub mod fetch;
pub mod http;
pub mod mirrors;
pub mod oci;
pub mod pins;
pub mod progress;
pub mod store;
pub mod watch;
