//! Partition tables, FAT and exFAT writers, image layout, and writing to or
//! updating a device. One file per on-disk format.

pub mod device;
pub mod exfat;
pub mod fat;
pub mod gpt;
pub mod image;
pub mod inspect;
pub mod layout;
pub mod mbr;
pub mod slice;
pub mod table;
