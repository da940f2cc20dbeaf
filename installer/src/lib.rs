//! Partition tables, FAT and exFAT writers, image layout, and writing to or
//! updating a device. One file (or directory) per on-disk format:
//!
//! - [`mbr`], [`gpt`]: the partition tables; [`table`] reads either into
//!   one list of [`table::PartitionEntry`].
//! - [`bios_boot`]: GRUB's i386-pc boot code in the MBR and the gap after it.
//! - [`fat`]: the ESP's FAT16/FAT32 writer and reader.
//! - [`exfat`]: the data partition's exFAT writer, reader and editor.
//! - [`layout`]: where the partitions go and the identity (GUIDs, serials)
//!   derived from the seed; [`image`] writes a whole disk image.
//! - [`slice`](mod@slice): a window of a disk as `Read + Write + Seek`.
//! - [`pe`]: a UEFI executable's Authenticode certificates (for `inspect`).
//! - [`inspect`]: what a disk or image holds, for `inspect`.
//! - [`device`]: block devices: probing, refusals, `install`, `install
//!   --update`, making the kernel see the partitions.
//!
//! Filesystem identity (volume serials as UUIDs, labels) and the build
//! record's marker come from `hiperiso_stick`, shared with the runtime.

pub mod bios_boot;
pub mod device;
pub mod exfat;
pub mod fat;
pub mod gpt;
pub mod image;
pub mod inspect;
pub mod layout;
pub mod mbr;
pub mod pe;
pub mod slice;
pub mod table;
