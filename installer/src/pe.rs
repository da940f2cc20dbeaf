//! The little `inspect` needs from a PE/COFF (UEFI) executable: whether it
//! carries an Authenticode signature (the certificate table of data
//! directory 4) and the common names of the certificates in it, which say
//! whose key a Secure Boot firmware must trust to run it. The signature is
//! not verified here: the firmware does that.

/// What the certificate table says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeSignature {
    /// Every X.509 common name in the table, in order, without repeats
    /// (signer, then issuers, as the PKCS#7 blob lists them).
    pub common_names: Vec<String>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Whether `image` is a PE file at all.
pub fn is_pe(image: &[u8]) -> bool {
    let Some(pe) = u32_at(image, 0x3c) else {
        return false;
    };
    image.starts_with(b"MZ") && image.get(pe as usize..pe as usize + 4) == Some(b"PE\0\0")
}

/// The Authenticode signature of a PE image, or `None` when it has none
/// (or is not a PE file).
pub fn signature(image: &[u8]) -> Option<PeSignature> {
    if !is_pe(image) {
        return None;
    }
    let optional = u32_at(image, 0x3c)? as usize + 24;
    // Data directories follow the standard and Windows fields: 96 bytes
    // in PE32 (magic 0x10b), 112 in PE32+ (0x20b).
    let directories = match u16_at(image, optional)? {
        0x10b => optional + 96,
        0x20b => optional + 112,
        _ => return None,
    };
    let security = directories + 4 * 8;
    let (offset, size) = (
        u32_at(image, security)? as usize,
        u32_at(image, security + 4)? as usize,
    );
    if size == 0 {
        return None;
    }
    let table = image.get(offset..offset.checked_add(size)?)?;
    Some(PeSignature {
        common_names: common_names(table),
    })
}

/// The raw bytes of the section called `name` (at most 8 bytes, e.g.
/// `.sbat`), trailing NUL padding included; `None` when there is none.
pub fn section<'a>(image: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if !is_pe(image) || name.len() > 8 {
        return None;
    }
    let coff = u32_at(image, 0x3c)? as usize + 4;
    let count = usize::from(u16_at(image, coff + 2)?);
    let table = coff + 20 + usize::from(u16_at(image, coff + 16)?);
    (0..count).find_map(|i| {
        let header = image.get(table + 40 * i..table + 40 * (i + 1))?;
        let own = header[..8].split(|&b| b == 0).next()?;
        if own != name.as_bytes() {
            return None;
        }
        let (size, offset) = (u32_at(header, 16)? as usize, u32_at(header, 20)? as usize);
        image.get(offset..offset.checked_add(size)?)
    })
}

/// The values of every commonName attribute (OID 2.5.4.3, DER `06 03 55 04
/// 03`) followed by a UTF8String, PrintableString or IA5String.
fn common_names(der: &[u8]) -> Vec<String> {
    const OID: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    let mut names: Vec<String> = Vec::new();
    let mut at = 0;
    while let Some(found) = der[at..].windows(OID.len()).position(|w| w == OID) {
        let value = at + found + OID.len();
        at = value;
        let (Some(&tag), Some(&len)) = (der.get(value), der.get(value + 1)) else {
            break;
        };
        if !matches!(tag, 0x0c | 0x13 | 0x16) || len >= 0x80 {
            continue;
        }
        if let Some(text) = der
            .get(value + 2..value + 2 + len as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            && !names.iter().any(|n| n == text)
        {
            names.push(text.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ header with a certificate table at `cert_at`.
    fn pe(cert: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let optional = 0x80 + 24;
        b[optional..optional + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        let security = optional + 112 + 32;
        if !cert.is_empty() {
            b[security..security + 4].copy_from_slice(&0x400u32.to_le_bytes());
            b[security + 4..security + 8].copy_from_slice(&(cert.len() as u32).to_le_bytes());
            b.extend_from_slice(cert);
        }
        b
    }

    fn cn(name: &str) -> Vec<u8> {
        let mut v = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, name.len() as u8];
        v.extend_from_slice(name.as_bytes());
        v
    }

    #[test]
    fn unsigned_and_signed_images() {
        assert_eq!(signature(&pe(&[])), None);
        assert_eq!(signature(b"not a PE"), None);
        let mut table = cn("hiperiso db key");
        table.extend(cn("hiperiso db key"));
        table.extend(cn("Microsoft Corporation UEFI CA 2011"));
        let found = signature(&pe(&table)).unwrap();
        assert_eq!(
            found.common_names,
            ["hiperiso db key", "Microsoft Corporation UEFI CA 2011"]
        );
    }

    #[test]
    fn a_table_beyond_the_file_is_no_signature() {
        let mut image = pe(&cn("x"));
        image.truncate(0x402);
        assert_eq!(signature(&image), None);
    }

    #[test]
    fn sections_by_name() {
        let mut image = pe(&[]);
        let coff = 0x84;
        image[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes());
        image[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let table = coff + 20 + 240;
        for (i, (name, offset)) in [(&b".text"[..], 0x300u32), (b".sbat", 0x380)]
            .iter()
            .enumerate()
        {
            let header = table + 40 * i;
            image[header..header + name.len()].copy_from_slice(name);
            image[header + 16..header + 20].copy_from_slice(&4u32.to_le_bytes());
            image[header + 20..header + 24].copy_from_slice(&offset.to_le_bytes());
        }
        image[0x380..0x384].copy_from_slice(b"sbat");
        assert_eq!(section(&image, ".sbat"), Some(&b"sbat"[..]));
        assert_eq!(section(&image, ".sba"), None);
        assert_eq!(section(b"MZ", ".sbat"), None);
    }
}
