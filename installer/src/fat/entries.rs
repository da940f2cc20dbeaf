//! FAT directory entries: name checks, 8.3 names and their long-name
//! (LFN) entries, DOS dates and times, volume labels.

use std::collections::HashSet;
use std::path::Path;

use hiperiso_stick::time::civil_from_days;

use super::{ATTR_LFN, FatError};

pub(super) fn check_name(dir: &Path, name: &str) -> Result<(), FatError> {
    let bad = |why| {
        Err(FatError::BadName {
            path: dir.to_path_buf(),
            name: name.to_string(),
            why,
        })
    };
    if name.encode_utf16().count() > 255 {
        return bad("longer than 255 characters");
    }
    if name.chars().any(|c| c < ' ' || "\"*/:<>?\\|".contains(c)) {
        return bad("contains a control character or one of \" * / : < > ? \\ |");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return bad("ends with a dot or a space");
    }
    Ok(())
}

const SHORT_EXTRA: &str = "!#$%&'()-@^_`{}~";

pub(super) fn short_char(c: char) -> Option<u8> {
    let c = c.to_ascii_uppercase();
    (c.is_ascii_alphanumeric() || SHORT_EXTRA.contains(c)).then_some(c as u8)
}

/// The 8.3 name of `name`, and whether a long name must go with it.
pub(super) fn short_name(name: &str, taken: &mut HashSet<[u8; 11]>) -> ([u8; 11], bool) {
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let exact = !base.is_empty()
        && base.len() <= 8
        && ext.len() <= 3
        && base
            .chars()
            .chain(ext.chars())
            .all(|c| short_char(c) == Some(c as u8));
    let mut short = [b' '; 11];
    if exact {
        short[..base.len()].copy_from_slice(base.as_bytes());
        short[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
        if taken.insert(short) {
            return (short, false);
        }
    }
    let map = |s: &str| -> Vec<u8> {
        s.chars()
            .filter(|&c| c != ' ' && c != '.')
            .map(|c| short_char(c).unwrap_or(b'_'))
            .collect()
    };
    let mut base = map(base);
    if base.is_empty() {
        base.push(b'_');
    }
    let ext = map(ext);
    for n in 1u32.. {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut candidate = [b' '; 11];
        candidate[..keep].copy_from_slice(&base[..keep]);
        candidate[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        let e = ext.len().min(3);
        candidate[8..8 + e].copy_from_slice(&ext[..e]);
        if taken.insert(candidate) {
            return (candidate, true);
        }
    }
    unreachable!("short name space exhausted")
}

pub(super) fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

pub(super) fn lfn_entries(name: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
    let mut units: Vec<u16> = name.encode_utf16().collect();
    if !units.len().is_multiple_of(13) {
        units.push(0);
        while !units.len().is_multiple_of(13) {
            units.push(0xFFFF);
        }
    }
    let checksum = lfn_checksum(short);
    let count = units.len() / 13;
    (0..count)
        .rev()
        .map(|i| {
            let mut e = [0u8; 32];
            e[0] = (i + 1) as u8 | if i + 1 == count { 0x40 } else { 0 };
            e[11] = ATTR_LFN;
            e[13] = checksum;
            let chunk = &units[i * 13..i * 13 + 13];
            let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
            for (unit, off) in chunk.iter().zip(offsets) {
                e[off..off + 2].copy_from_slice(&unit.to_le_bytes());
            }
            e
        })
        .collect()
}

/// DOS date and time of a Unix timestamp (UTC), clamped to 1980..=2107.
pub fn dos_date_time(unix: u64) -> (u16, u16) {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    let (year, month, day) = civil_from_days(days);
    let (month, day) = (month as u16, day as u16);
    if year < 1980 {
        return ((1 << 5) | 1, 0);
    }
    if year > 2107 {
        return ((127 << 9) | (12 << 5) | 31, (23 << 11) | (59 << 5) | 29);
    }
    let date = (((year - 1980) as u16) << 9) | (month << 5) | day;
    let time =
        ((secs / 3600) as u16) << 11 | (((secs / 60) % 60) as u16) << 5 | ((secs % 60) / 2) as u16;
    (date, time)
}

pub(super) fn short_entry(
    short: &[u8; 11],
    attr: u8,
    cluster: u32,
    size: u32,
    stamp: (u16, u16),
) -> [u8; 32] {
    let (date, time) = stamp;
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(short);
    e[11] = attr;
    e[14..16].copy_from_slice(&time.to_le_bytes());
    e[16..18].copy_from_slice(&date.to_le_bytes());
    e[18..20].copy_from_slice(&date.to_le_bytes());
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes());
    e[24..26].copy_from_slice(&date.to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// A volume label as the 11 bytes FAT stores: ASCII letters (stored in
/// upper case), digits, space and the short-name punctuation, at most 11;
/// anything else is an error, never cut or dropped.
pub fn label_bytes(label: &str) -> Result<[u8; 11], FatError> {
    let invalid = |reason| FatError::InvalidLabel {
        label: label.to_string(),
        reason,
    };
    if label.len() > 11 {
        return Err(invalid(format!(
            "{} characters; FAT allows at most 11",
            label.chars().count()
        )));
    }
    if let Some(c) = label
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || " !#$%&'()-@^_`{}~".contains(c)))
    {
        return Err(invalid(format!(
            "{c:?} is not allowed (A-Z, 0-9, space and !#$%&'()-@^_`{{}}~ are)"
        )));
    }
    let mut out = [b' '; 11];
    for (slot, b) in out.iter_mut().zip(label.bytes()) {
        *slot = b.to_ascii_uppercase();
    }
    Ok(out)
}
