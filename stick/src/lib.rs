//! The stick's contract (DESIGN.md §4–§5), in one place: what the builder
//! writes, GRUB and `hiperiso-init` read, and `hiperiso-log` analyzes.
//! Every crate of the workspace depends on this one, and it depends on
//! none of them. This crate's documentation is the contract's reference;
//! DESIGN.md §5 summarizes it.
//!
//! - [`paths`]: the files on the ESP and on the data partition.
//! - [`boot`]: the kernel command line keys (GRUB → `hiperiso-init`) and
//!   the GRUB environment block keys (`hiperiso/grubenv`).
//! - [`session`]: the session directory — file names, the JSON schemas of
//!   `session.json`, `status.json`, `timing.json`, `index.jsonl`, the
//!   screenshot timeline — and the helpers that write them atomically.
//! - [`qemu`]: the one QEMU+OVMF command-line builder, for the stick's
//!   guest, `hiperiso-build run`'s outer VM and the tests.
//! - [`io`]: I/O errors that say what was being done to which path, atomic
//!   writes, file hashes.
//! - [`time`]: civil dates and the UTC formats of session names and files.
//! - [`fs_identity`]: exFAT/FAT type, volume serial (as a UUID) and label
//!   from a partition's first sectors.
//! - [`build_json`]: the ESP's build record and its `"hiperiso"` marker.
//! - [`image_hash`]: the image hash over written blocks, the same for a
//!   sparse file and a device.

pub mod boot;
pub mod build_json;
pub mod fs_identity;
pub mod image_hash;
pub mod io;
pub mod paths;
pub mod qemu;
pub mod session;
pub mod time;

/// An error with its sources, `a: b: c` (for logs that have no `caused by`
/// lines, such as the stick's console).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_joins_sources() {
        let inner = std::io::Error::other("disk gone");
        let outer = crate::io::IoError {
            action: "read",
            path: "/x".into(),
            source: inner,
        };
        assert_eq!(super::error_chain(&outer), "cannot read /x: disk gone");
    }
}
