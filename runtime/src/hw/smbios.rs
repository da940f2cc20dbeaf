//! The SMBIOS tables a guest sees, read from its memory: the entry point
//! (`_SM_` 2.x or `_SM3_` 3.x, found on a 16-byte boundary with a valid
//! checksum) and the structure table it points to, as text
//! (`hw/qemu_smbios.txt`). QEMU has no `info smbios`; the firmware
//! (SeaBIOS, OVMF) copies QEMU's tables into guest memory.

use std::fmt::Write as _;

/// Where the entry point may be: SeaBIOS puts it in the BIOS F segment.
pub const F_SEGMENT: (u64, usize) = (0xF_0000, 0x1_0000);
/// OVMF allocates it top-down below 4 GiB: the top of low RAM is scanned
/// in chunks of this size, this many chunks.
pub const TOP_CHUNK: usize = 4 << 20;
pub const TOP_CHUNKS: u64 = 16;
/// At most this much of a structure table is read: QEMU's are a few KiB,
/// and a 3.x entry point may claim up to 4 GiB.
pub const MAX_TABLE: usize = 1 << 20;

/// A checked SMBIOS entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    /// Where it was found (guest-physical).
    pub address: u64,
    pub major: u8,
    pub minor: u8,
    /// The structure table: guest-physical address and (maximum) length.
    pub table: u64,
    pub table_len: usize,
}

/// The first valid entry point in `mem`, which starts at guest-physical
/// `base`.
pub fn find_entry_point(mem: &[u8], base: u64) -> Option<EntryPoint> {
    let sum_ok = |b: &[u8]| b.iter().fold(0u8, |s, x| s.wrapping_add(*x)) == 0;
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    (0..mem.len()).step_by(16).find_map(|at| {
        let rest = &mem[at..];
        let address = base + at as u64;
        if rest.starts_with(b"_SM3_") && rest.len() >= 24 {
            let len = usize::from(rest[6]);
            (len >= 24 && rest.len() >= len && sum_ok(&rest[..len])).then(|| EntryPoint {
                address,
                major: rest[7],
                minor: rest[8],
                table: u64::from_le_bytes(rest[16..24].try_into().unwrap()),
                table_len: u32_at(rest, 12) as usize,
            })
        } else if rest.starts_with(b"_SM_") && rest.len() >= 31 {
            let len = usize::from(rest[5]);
            (len >= 31
                && rest.len() >= len
                && sum_ok(&rest[..len])
                && &rest[16..21] == b"_DMI_"
                && sum_ok(&rest[16..31]))
            .then(|| EntryPoint {
                address,
                major: rest[6],
                minor: rest[7],
                table: u64::from(u32_at(rest, 24)),
                table_len: usize::from(u16_at(rest, 22)),
            })
        } else {
            None
        }
    })
}

/// The structures of `table` as text, one block per structure: its type,
/// handle and length, the formatted area in hex and the strings, up to the
/// end-of-table structure (type 127).
pub fn decode(table: &[u8]) -> String {
    let mut out = String::new();
    let mut at = 0;
    while at + 4 <= table.len() {
        let (kind, len) = (table[at], usize::from(table[at + 1]));
        let handle = u16::from_le_bytes([table[at + 2], table[at + 3]]);
        if len < 4 || at + len > table.len() {
            let _ = writeln!(out, "# malformed structure at offset {at}");
            break;
        }
        let _ = writeln!(
            out,
            "Handle {handle:#06x}, DMI type {kind} ({}), {len} bytes",
            type_name(kind)
        );
        let hex: Vec<String> = table[at + 4..at + len]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let _ = writeln!(out, "  data: {}", hex.join(" "));
        // The strings: NUL-terminated, the set ends with an empty one.
        let mut end = at + len;
        let mut number = 1;
        while end < table.len() && table[end] != 0 {
            let stop = table[end..]
                .iter()
                .position(|&b| b == 0)
                .map_or(table.len(), |p| end + p);
            let text = String::from_utf8_lossy(&table[end..stop]);
            let _ = writeln!(out, "  string {number}: {text:?}");
            number += 1;
            end = stop + 1;
        }
        at = if end == at + len { end + 2 } else { end + 1 };
        if kind == 127 {
            break;
        }
    }
    out
}

fn type_name(kind: u8) -> &'static str {
    match kind {
        0 => "BIOS information",
        1 => "system information",
        2 => "baseboard",
        3 => "chassis",
        4 => "processor",
        7 => "cache",
        9 => "system slots",
        11 => "OEM strings",
        16 => "physical memory array",
        17 => "memory device",
        19 => "memory array mapped address",
        32 => "system boot information",
        127 => "end of table",
        _ => "other",
    }
}

/// `qemu_smbios.txt` from guest memory read by `read(address, length)`:
/// the F segment first (SeaBIOS), then the top of low RAM (`low_ram`
/// bytes), where OVMF's page allocations below 4 GiB land; a region that
/// cannot be read (SMRAM) is skipped.
pub fn guest_smbios(
    mut read: impl FnMut(u64, usize) -> Option<Vec<u8>>,
    low_ram: u64,
) -> Result<String, String> {
    let mut regions = vec![F_SEGMENT];
    for i in 1..=TOP_CHUNKS {
        if let Some(start) = low_ram.checked_sub(i * TOP_CHUNK as u64) {
            regions.push((start, TOP_CHUNK));
        }
    }
    let entry = regions
        .into_iter()
        .find_map(|(base, len)| find_entry_point(&read(base, len)?, base))
        .ok_or("no SMBIOS entry point in the F segment or the top of low RAM")?;
    let table = read(entry.table, entry.table_len.min(MAX_TABLE))
        .ok_or_else(|| format!("cannot read the table at {:#x}", entry.table))?;
    Ok(format!(
        "# SMBIOS the guest sees, read from its memory\n\
         entry_point: {}.{} at {:#x}\ntable: {:#x}, {} bytes\n\n{}",
        entry.major,
        entry.minor,
        entry.address,
        entry.table,
        entry.table_len,
        decode(&table)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3.0 entry point for a table at `table` of `len` bytes.
    fn sm3(table: u64, len: u32) -> Vec<u8> {
        let mut ep = b"_SM3_\0\x18\x03\x00\x00\x01\x00".to_vec();
        ep.extend(len.to_le_bytes());
        ep.extend(table.to_le_bytes());
        let sum = ep.iter().fold(0u8, |s, x| s.wrapping_add(*x));
        ep[5] = 0u8.wrapping_sub(sum);
        ep
    }

    fn table() -> Vec<u8> {
        let mut t = vec![1, 8, 0, 1, 1, 2, 0, 0];
        t.extend(b"QEMU\0Standard PC\0\0");
        t.extend([127, 4, 0xff, 0xfe, 0, 0]);
        t
    }

    #[test]
    fn entry_point_on_a_paragraph_with_its_checksum() {
        let mut mem = vec![0u8; 64];
        mem[32..56].copy_from_slice(&sm3(0x1000, 25));
        let ep = find_entry_point(&mem, 0xF_0000).unwrap();
        assert_eq!(
            (ep.address, ep.major, ep.table, ep.table_len),
            (0xF_0020, 3, 0x1000, 25)
        );
        // A bad checksum or an anchor off a 16-byte boundary is not one.
        mem[40] ^= 1;
        assert_eq!(find_entry_point(&mem, 0), None);
        let mut off = vec![0u8; 64];
        off[8..32].copy_from_slice(&sm3(0x1000, 25));
        assert_eq!(find_entry_point(&off, 0), None);
    }

    #[test]
    fn legacy_entry_point() {
        let mut ep = b"_SM_\0\x1f\x02\x08\x00\x00\x00\0\0\0\0\0_DMI_\0".to_vec();
        ep.extend(25u16.to_le_bytes());
        ep.extend(0xE_0000u32.to_le_bytes());
        ep.extend([2, 0, 0x28]);
        let dmi = 0u8.wrapping_sub(ep[16..31].iter().fold(0u8, |s, x| s.wrapping_add(*x)));
        ep[21] = dmi;
        ep[4] = 0u8.wrapping_sub(ep.iter().fold(0u8, |s, x| s.wrapping_add(*x)));
        let ep = find_entry_point(&ep, 0).unwrap();
        assert_eq!(
            (ep.major, ep.minor, ep.table, ep.table_len),
            (2, 8, 0xE_0000, 25)
        );
    }

    #[test]
    fn structures_with_their_strings() {
        assert_eq!(
            decode(&table()),
            "Handle 0x0100, DMI type 1 (system information), 8 bytes\n  data: 01 02 00 00\n  \
             string 1: \"QEMU\"\n  string 2: \"Standard PC\"\n\
             Handle 0xfeff, DMI type 127 (end of table), 4 bytes\n  data: \n"
        );
    }

    #[test]
    fn found_at_the_top_of_low_ram() {
        let low_ram = 64 << 20;
        let ep_at = low_ram - 0x2000;
        let text = guest_smbios(
            |base, len| {
                let mut mem = vec![0u8; len];
                let end = base + len as u64;
                if (base..end).contains(&ep_at) {
                    let at = (ep_at - base) as usize;
                    mem[at..at + 24].copy_from_slice(&sm3(0x5000, 25));
                }
                if base == 0x5000 {
                    mem.copy_from_slice(&table()[..len]);
                }
                Some(mem)
            },
            low_ram,
        )
        .unwrap();
        assert!(text.contains("entry_point: 3.0 at 0x3ffe000\n"), "{text}");
        assert!(text.contains("string 1: \"QEMU\""), "{text}");
        assert!(guest_smbios(|_, len| Some(vec![0; len]), low_ram).is_err());
    }

    /// OVMF's (edk2-stable, Debian's OVMF_CODE_4M.fd) for a 256 MiB q35
    /// guest, as QMP `pmemsave` showed it once the boot manager ran: the
    /// 2.8 entry point on a page ~11 MiB below the top of RAM. Above it here
    /// a region that cannot be read, and OVMF's own template of the anchor
    /// (all zero, so a wrong checksum), which must not stop the search.
    #[test]
    fn ovmf_entry_point_below_a_decoy() {
        let real = hex("5f534d5f2e1f02084b000000000000005f444d495f677f0100f0510f090028");
        let decoy = hex("5f534d5f001f020800000000000000005f444d495f00000000000000000028");
        let low_ram = 256 << 20;
        let (decoy_at, ep_at, table_at) = (0xf9f_f000, 0xf52_0000, 0xf51_f000);
        let mut reads = Vec::new();
        let text = guest_smbios(
            |base, len| {
                reads.push((base, len));
                if base + len as u64 == low_ram {
                    return None;
                }
                let mut mem = vec![0u8; len];
                for (at, bytes) in [(decoy_at, &decoy), (ep_at, &real)] {
                    if (base..base + len as u64).contains(&at) {
                        let at = (at - base) as usize;
                        mem[at..at + bytes.len()].copy_from_slice(bytes);
                    }
                }
                if base == table_at {
                    mem[..table().len()].copy_from_slice(&table());
                }
                Some(mem)
            },
            low_ram,
        )
        .unwrap();
        assert!(text.contains("entry_point: 2.8 at 0xf520000\n"), "{text}");
        assert!(text.contains("table: 0xf51f000, 383 bytes\n"), "{text}");
        assert!(text.contains("string 2: \"Standard PC\""), "{text}");
        // Bounded: the F segment, 4 MiB chunks down to the one holding the
        // entry point, then the table.
        assert_eq!(reads.len(), 1 + 3 + 1, "{reads:x?}");
        assert!(reads.iter().all(|&(_, len)| len <= TOP_CHUNK), "{reads:x?}");
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_huge_table_length_is_not_read_whole() {
        let mut asked = 0;
        let _ = guest_smbios(
            |base, len| {
                let mut mem = vec![0u8; len];
                if base == F_SEGMENT.0 {
                    mem[..24].copy_from_slice(&sm3(0x1000, u32::MAX));
                } else {
                    asked = len;
                }
                Some(mem)
            },
            64 << 20,
        );
        assert_eq!(asked, MAX_TABLE);
    }
}
