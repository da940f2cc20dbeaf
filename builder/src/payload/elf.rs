//! ELF dynamic-linking metadata (the program interpreter, DT_NEEDED,
//! DT_RUNPATH/DT_RPATH) and the library closure of binaries in a tree.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::Path;

use crate::debian::deb::resolve_in_tree;

/// What the dynamic loader needs to start a binary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DynamicInfo {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub search_path: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{file}: malformed ELF: {reason}")]
    Malformed { file: String, reason: &'static str },
    #[error("{file}: needs {library}, found in none of {searched}")]
    MissingLibrary {
        file: String,
        library: String,
        searched: String,
    },
    #[error("{file}: interpreter {interpreter} is not in the tree")]
    MissingInterpreter { file: String, interpreter: String },
    #[error("reading {file}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}
fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}
fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}

fn c_string(bytes: &[u8], offset: usize) -> Option<String> {
    let tail = bytes.get(offset..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    String::from_utf8(tail[..end].to_vec()).ok()
}

/// Parses a little-endian ELF64 file. Returns `Ok(None)` for anything that
/// is not ELF (scripts, data); 32-bit or big-endian ELF is an error.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Option<DynamicInfo>, ElfError> {
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let malformed = |reason| ElfError::Malformed {
        file: file.to_string(),
        reason,
    };
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(malformed("only little-endian ELF64 is supported"));
    }
    let phoff = u64_at(bytes, 0x20).ok_or(malformed("truncated header"))? as usize;
    let phentsize = u16_at(bytes, 0x36).ok_or(malformed("truncated header"))? as usize;
    let phnum = u16_at(bytes, 0x38).ok_or(malformed("truncated header"))? as usize;
    // (type, offset, vaddr, filesz)
    let mut segments = Vec::with_capacity(phnum);
    for index in 0..phnum {
        let at = phoff + index * phentsize;
        let segment = (|| {
            Some((
                u32_at(bytes, at)?,
                u64_at(bytes, at + 8)?,
                u64_at(bytes, at + 16)?,
                u64_at(bytes, at + 32)?,
            ))
        })()
        .ok_or(malformed("truncated program header"))?;
        segments.push(segment);
    }
    let mut info = DynamicInfo::default();
    for &(kind, offset, _, size) in &segments {
        if kind == PT_INTERP {
            let raw = bytes
                .get(offset as usize..(offset + size) as usize)
                .ok_or(malformed("PT_INTERP out of bounds"))?;
            info.interpreter = c_string(raw, 0);
        }
    }
    let Some(&(_, dynamic_offset, _, dynamic_size)) =
        segments.iter().find(|segment| segment.0 == PT_DYNAMIC)
    else {
        return Ok(Some(info)); // static
    };
    let mut entries = Vec::new();
    let mut at = dynamic_offset as usize;
    let end = (dynamic_offset + dynamic_size) as usize;
    while at + 16 <= end {
        let tag = u64_at(bytes, at).ok_or(malformed("PT_DYNAMIC out of bounds"))?;
        let value = u64_at(bytes, at + 8).ok_or(malformed("PT_DYNAMIC out of bounds"))?;
        if tag == DT_NULL {
            break;
        }
        entries.push((tag, value));
        at += 16;
    }
    let strtab_vaddr = entries
        .iter()
        .find(|entry| entry.0 == DT_STRTAB)
        .ok_or(malformed("dynamic section without DT_STRTAB"))?
        .1;
    let strtab = segments
        .iter()
        .find(|&&(kind, _, vaddr, size)| {
            kind == PT_LOAD && vaddr <= strtab_vaddr && strtab_vaddr < vaddr + size
        })
        .map(|&(_, offset, vaddr, _)| (strtab_vaddr - vaddr + offset) as usize)
        .ok_or(malformed("DT_STRTAB outside every PT_LOAD"))?;
    let string =
        |value: u64| c_string(bytes, strtab + value as usize).ok_or(malformed("bad string offset"));
    for &(tag, value) in &entries {
        match tag {
            DT_NEEDED => info.needed.push(string(value)?),
            DT_RPATH | DT_RUNPATH => {
                info.search_path.extend(
                    string(value)?
                        .split(':')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
            _ => {}
        }
    }
    Ok(Some(info))
}

/// The NUL-separated `key=value` strings of a kernel module's `.modinfo`
/// section (`name=kvm_amd`, `depends=kvm,ccp`, …). Empty when absent.
pub fn modinfo(file: &str, bytes: &[u8]) -> Result<Vec<(String, String)>, ElfError> {
    let malformed = |reason| ElfError::Malformed {
        file: file.to_string(),
        reason,
    };
    if !bytes.starts_with(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(malformed("not a little-endian ELF64 kernel module"));
    }
    let header = (|| {
        Some((
            u64_at(bytes, 0x28)? as usize,
            u16_at(bytes, 0x3A)? as usize,
            u16_at(bytes, 0x3C)? as usize,
            u16_at(bytes, 0x3E)? as usize,
        ))
    })();
    let (shoff, shentsize, shnum, shstrndx) = header.ok_or(malformed("truncated header"))?;
    let section = |index: usize| {
        let at = shoff + index * shentsize;
        Some((
            u32_at(bytes, at)?,
            u64_at(bytes, at + 24)? as usize,
            u64_at(bytes, at + 32)? as usize,
        ))
    };
    let (_, names_offset, _) = section(shstrndx).ok_or(malformed("bad section string table"))?;
    for index in 0..shnum {
        let (name, offset, size) = section(index).ok_or(malformed("truncated section header"))?;
        if c_string(bytes, names_offset + name as usize).as_deref() != Some(".modinfo") {
            continue;
        }
        let data = bytes
            .get(offset..offset + size)
            .ok_or(malformed(".modinfo out of bounds"))?;
        return Ok(data
            .split(|&b| b == 0)
            .filter_map(|item| std::str::from_utf8(item).ok())
            .filter_map(|item| item.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect());
    }
    Ok(Vec::new())
}

/// The loader's search directories inside `root`: `/etc/ld.so.conf` and the
/// files it includes (sorted), then the default directories.
pub fn library_dirs(root: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut conf_files = vec![root.join("etc/ld.so.conf")];
    if let Ok(entries) = fs::read_dir(root.join("etc/ld.so.conf.d")) {
        let mut names: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        names.sort();
        conf_files.extend(names);
    }
    for conf in conf_files {
        for line in fs::read_to_string(conf).unwrap_or_default().lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() && !line.starts_with("include") {
                dirs.push(line.trim_start_matches('/').to_string());
            }
        }
    }
    for default in [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib64",
        "usr/lib64",
        "lib",
        "usr/lib",
    ] {
        dirs.push(default.to_string());
    }
    let mut seen = BTreeSet::new();
    dirs.retain(|dir| seen.insert(dir.clone()));
    dirs
}

fn exists_in_tree(root: &Path, path: &str) -> bool {
    let components: Vec<String> = path.split('/').map(str::to_string).collect();
    resolve_in_tree(root, &components, true).is_ok_and(|p| p.is_file())
}

/// Every path (relative to `root`) needed to run `binaries`: the binaries,
/// their interpreter and the transitive DT_NEEDED libraries, each as the
/// name the loader looks up (symlinks are for the caller to follow).
pub fn closure(root: &Path, binaries: &[&str]) -> Result<BTreeSet<String>, ElfError> {
    let dirs = library_dirs(root);
    let mut result = BTreeSet::new();
    let mut queue: VecDeque<String> = binaries
        .iter()
        .map(|b| b.trim_start_matches('/').to_string())
        .collect();
    while let Some(path) = queue.pop_front() {
        if !result.insert(path.clone()) {
            continue;
        }
        let components: Vec<String> = path.split('/').map(str::to_string).collect();
        let real = resolve_in_tree(root, &components, true).map_err(|source| ElfError::Io {
            file: path.clone(),
            source,
        })?;
        let bytes = fs::read(&real).map_err(|source| ElfError::Io {
            file: path.clone(),
            source,
        })?;
        let Some(info) = parse(&path, &bytes)? else {
            continue;
        };
        if let Some(interpreter) = info.interpreter {
            let interpreter = interpreter.trim_start_matches('/').to_string();
            if !exists_in_tree(root, &interpreter) {
                return Err(ElfError::MissingInterpreter {
                    file: path,
                    interpreter,
                });
            }
            queue.push_back(interpreter);
        }
        let origin = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let own_dirs: Vec<String> = info
            .search_path
            .iter()
            .map(|dir| dir.replace("$ORIGIN", origin).replace("${ORIGIN}", origin))
            .map(|dir| dir.trim_start_matches('/').to_string())
            .collect();
        for library in info.needed {
            let found = own_dirs
                .iter()
                .chain(&dirs)
                .map(|dir| format!("{dir}/{library}"))
                .find(|candidate| exists_in_tree(root, candidate));
            match found {
                Some(candidate) => queue.push_back(candidate),
                None => {
                    return Err(ElfError::MissingLibrary {
                        file: path,
                        library,
                        searched: own_dirs
                            .iter()
                            .chain(&dirs)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_binary_with_libs() -> Option<&'static str> {
        let ls = ["/usr/bin/ls", "/bin/ls"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        hiperiso_prereq::check(
            ls.is_some(),
            "a dynamically linked ls",
            "apt-get install coreutils",
        )
        .then_some(ls?)
    }

    #[test]
    fn parses_a_real_dynamic_binary() {
        let Some(ls) = host_binary_with_libs() else {
            return;
        };
        let info = parse(ls, &fs::read(ls).unwrap()).unwrap().unwrap();
        assert_eq!(
            info.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(info.needed.iter().any(|n| n == "libc.so.6"), "{info:?}");
    }

    #[test]
    fn non_elf_is_none_and_truncated_is_error() {
        assert_eq!(parse("s", b"#!/bin/sh\n").unwrap(), None);
        let mut header = b"\x7fELF\x02\x01\x01".to_vec();
        header.resize(0x40, 0);
        header[0x20] = 0xff; // phoff far beyond the file
        header[0x38] = 1;
        header[0x36] = 56;
        let err = parse("t", &header).unwrap_err();
        assert!(err.to_string().contains("t: malformed ELF"), "{err}");
        let err = parse("b", b"\x7fELF\x01\x01").unwrap_err();
        assert!(err.to_string().contains("ELF64"), "{err}");
    }

    #[test]
    fn closure_in_a_copied_tree_and_missing_library_error() {
        let Some(ls) = host_binary_with_libs() else {
            return;
        };
        let root = tempfile::tempdir().unwrap();
        let host = closure(Path::new("/"), &[ls]).unwrap();
        assert!(host.iter().any(|p| p.ends_with("libc.so.6")), "{host:?}");
        assert!(host.contains("lib64/ld-linux-x86-64.so.2"), "{host:?}");
        // Copy everything except libc: the closure must name what is missing.
        for path in &host {
            if path.ends_with("libc.so.6") {
                continue;
            }
            let target = root.path().join(path);
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            fs::copy(Path::new("/").join(path), &target).unwrap();
        }
        let err = closure(root.path(), &[ls]).unwrap_err();
        assert!(err.to_string().contains("needs libc.so.6"), "{err}");
    }
}
