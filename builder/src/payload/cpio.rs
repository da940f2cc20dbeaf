//! The newc ("070701") cpio format, written deterministically: paths sorted
//! bytewise, uid/gid 0, one fixed mtime, inode numbers assigned in path
//! order, hardlinks sharing one inode with the data on the group's last
//! entry (as GNU cpio writes and the kernel's unpacker accepts).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// One entry of the archive. Paths are relative (`usr/bin/qemu`), without a
/// leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Directory {
        mode: u32,
    },
    File {
        content: Content,
        mode: u32,
    },
    /// Another name for the regular file at `target` (a path in the tree).
    HardLink {
        target: String,
    },
    Symlink {
        target: String,
    },
    CharDevice {
        mode: u32,
        major: u32,
        minor: u32,
    },
    BlockDevice {
        mode: u32,
        major: u32,
        minor: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio path {0:?} is empty, absolute or contains `..`")]
    BadPath(String),
    #[error("{path}: hardlink to {target}, which is not a regular file in the tree")]
    DanglingHardLink { path: String, target: String },
    #[error("{path}: parent {parent} is not a directory in the tree")]
    ParentNotDirectory { path: String, parent: String },
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("writing the archive")]
    Write(#[source] io::Error),
}

/// The archive's content: a map from path to node, sorted bytewise.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `node` at `path`, creating missing parent directories (mode
    /// 0755) and replacing whatever was there.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), CpioError> {
        let path = normalize(path)?;
        let mut parent = String::new();
        for part in path.split('/').take(path.matches('/').count()) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.nodes.get(&parent) {
                None => {
                    self.nodes
                        .insert(parent.clone(), Node::Directory { mode: 0o755 });
                }
                Some(Node::Directory { .. }) => {}
                Some(_) => {
                    return Err(CpioError::ParentNotDirectory {
                        path,
                        parent: parent.clone(),
                    });
                }
            }
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path.trim_start_matches('/'))
    }

    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds `/dev/console` (c 5 1) and `/dev/null` (c 1 3), which the kernel
    /// needs before userspace runs.
    pub fn add_device_nodes(&mut self) -> Result<(), CpioError> {
        self.insert("dev", Node::Directory { mode: 0o755 })?;
        self.insert(
            "dev/console",
            Node::CharDevice {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        )?;
        self.insert(
            "dev/null",
            Node::CharDevice {
                mode: 0o666,
                major: 1,
                minor: 3,
            },
        )
    }
}

fn normalize(path: &str) -> Result<String, CpioError> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty()
        || trimmed
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(CpioError::BadPath(path.to_string()));
    }
    Ok(trimmed.to_string())
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

/// Counts bytes so padding can be computed without `Seek`.
struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> CountingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.inner.write_all(bytes).map_err(CpioError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, alignment: u64) -> Result<(), CpioError> {
        let padding = (alignment - self.written % alignment) % alignment;
        self.put(&vec![0; padding as usize])
    }

    fn header(&mut self, header: &Header, name: &str) -> Result<(), CpioError> {
        let fields = [
            header.ino,
            header.mode,
            0, // uid
            0, // gid
            header.nlink,
            header.mtime,
            header.filesize,
            0, // devmajor
            0, // devminor
            header.rdev_major,
            header.rdev_minor,
            name.len() as u32 + 1,
            0, // check
        ];
        let mut text = String::with_capacity(110);
        text.push_str("070701");
        for field in fields {
            text.push_str(&format!("{field:08X}"));
        }
        self.put(text.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad_to(4)
    }
}

/// Writes `tree` as a newc archive, every mtime set to `mtime`, padded to a
/// 512-byte block like cpio(1). Returns the number of bytes written.
pub fn write<W: Write>(tree: &Tree, mtime: u32, out: W) -> Result<u64, CpioError> {
    // Hardlink groups: the file a group's names point to -> all its names.
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (path, node) in &tree.nodes {
        match node {
            Node::File { .. } => groups.entry(path).or_default().push(path),
            Node::HardLink { target } => match tree.nodes.get(target) {
                Some(Node::File { .. }) => groups.entry(target).or_default().push(path),
                _ => {
                    return Err(CpioError::DanglingHardLink {
                        path: path.clone(),
                        target: target.clone(),
                    });
                }
            },
            _ => {}
        }
    }
    let mut group_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (file, names) in &mut groups {
        names.sort_unstable();
        for name in names.iter() {
            group_of.insert(name, file);
        }
    }
    let mut subdirectories: BTreeMap<&str, u32> = BTreeMap::new();
    for (path, node) in &tree.nodes {
        if matches!(node, Node::Directory { .. }) {
            let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
            *subdirectories.entry(parent).or_default() += 1;
        }
    }

    let mut writer = CountingWriter {
        inner: io::BufWriter::new(out),
        written: 0,
    };
    let mut next_inode = 1u32;
    let mut group_inode: BTreeMap<&str, u32> = BTreeMap::new();
    for (path, node) in &tree.nodes {
        let mut header = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime,
            filesize: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        let mut data: Option<Vec<u8>> = None;
        match node {
            Node::Directory { mode } => {
                header.mode = S_IFDIR | (mode & 0o7777);
                header.nlink = 2 + subdirectories.get(path.as_str()).copied().unwrap_or(0);
            }
            Node::File { .. } | Node::HardLink { .. } => {
                let file = group_of[path.as_str()];
                let names = &groups[file];
                let Some(Node::File { content, mode }) = tree.nodes.get(file) else {
                    unreachable!("groups only hold regular files");
                };
                header.mode = S_IFREG | (mode & 0o7777);
                header.nlink = names.len() as u32;
                if let Some(&inode) = group_inode.get(file) {
                    header.ino = inode;
                } else {
                    group_inode.insert(file, next_inode);
                    header.ino = next_inode;
                    next_inode += 1;
                }
                if names.last() == Some(&path.as_str()) {
                    data = Some(read_content(content)?);
                }
            }
            Node::Symlink { target } => {
                header.mode = S_IFLNK | 0o777;
                data = Some(target.as_bytes().to_vec());
            }
            Node::CharDevice { mode, major, minor } | Node::BlockDevice { mode, major, minor } => {
                let kind = if matches!(node, Node::CharDevice { .. }) {
                    S_IFCHR
                } else {
                    S_IFBLK
                };
                header.mode = kind | (mode & 0o7777);
                header.rdev_major = *major;
                header.rdev_minor = *minor;
            }
        }
        if header.ino == 0 {
            header.ino = next_inode;
            next_inode += 1;
        }
        header.filesize = data.as_ref().map_or(0, |d| d.len() as u32);
        writer.header(&header, path)?;
        if let Some(data) = data {
            writer.put(&data)?;
            writer.pad_to(4)?;
        }
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdev_major: 0,
        rdev_minor: 0,
    };
    writer.header(&trailer, "TRAILER!!!")?;
    writer.pad_to(512)?;
    writer.inner.flush().map_err(CpioError::Write)?;
    Ok(writer.written)
}

fn read_content(content: &Content) -> Result<Vec<u8>, CpioError> {
    match content {
        Content::Bytes(bytes) => Ok(bytes.clone()),
        Content::Path(path) => {
            let mut bytes = Vec::new();
            fs::File::open(path)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(|source| CpioError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut tree = Tree::new();
        tree.insert(
            "usr/bin/busybox",
            Node::File {
                content: Content::Bytes(b"BB".to_vec()),
                mode: 0o755,
            },
        )
        .unwrap();
        tree.insert(
            "bin/sh",
            Node::Symlink {
                target: "/usr/bin/busybox".into(),
            },
        )
        .unwrap();
        tree.insert(
            "usr/bin/ash",
            Node::HardLink {
                target: "usr/bin/busybox".into(),
            },
        )
        .unwrap();
        tree.insert(
            "init",
            Node::File {
                content: Content::Bytes(b"#!/bin/sh\necho hi\n".to_vec()),
                mode: 0o755,
            },
        )
        .unwrap();
        tree.add_device_nodes().unwrap();
        tree
    }

    /// Parses a newc archive back: (name, mode, ino, nlink, mtime, rdev, data).
    type Parsed = (String, u32, u32, u32, u32, (u32, u32), Vec<u8>);
    fn parse(bytes: &[u8]) -> Vec<Parsed> {
        let mut entries = Vec::new();
        let mut offset = 0;
        loop {
            let field = |i: usize| {
                let start = offset + 6 + i * 8;
                u32::from_str_radix(std::str::from_utf8(&bytes[start..start + 8]).unwrap(), 16)
                    .unwrap()
            };
            assert_eq!(&bytes[offset..offset + 6], b"070701");
            let (ino, mode, nlink, mtime, size) =
                (field(0), field(1), field(4), field(5), field(6));
            let (rmaj, rmin, namesize) = (field(9), field(10), field(11) as usize);
            assert_eq!((field(2), field(3)), (0, 0), "uid/gid");
            let name_start = offset + 110;
            let name =
                String::from_utf8(bytes[name_start..name_start + namesize - 1].to_vec()).unwrap();
            let data_start = (name_start + namesize).next_multiple_of(4);
            let data = bytes[data_start..data_start + size as usize].to_vec();
            offset = (data_start + size as usize).next_multiple_of(4);
            if name == "TRAILER!!!" {
                break;
            }
            entries.push((name, mode, ino, nlink, mtime, (rmaj, rmin), data));
        }
        assert_eq!(bytes.len() % 512, 0);
        entries
    }

    #[test]
    fn sorted_deterministic_with_hardlinks_and_devices() {
        let mut first = Vec::new();
        let mut second = Vec::new();
        write(&sample(), 1_700_000_000, &mut first).unwrap();
        write(&sample(), 1_700_000_000, &mut second).unwrap();
        assert_eq!(first, second);
        let entries = parse(&first);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "dev/null",
                "init",
                "usr",
                "usr/bin",
                "usr/bin/ash",
                "usr/bin/busybox"
            ]
        );
        assert!(entries.iter().all(|e| e.4 == 1_700_000_000));
        let by_name = |n: &str| entries.iter().find(|e| e.0 == n).unwrap().clone();
        let (ash, busybox) = (by_name("usr/bin/ash"), by_name("usr/bin/busybox"));
        assert_eq!(ash.2, busybox.2, "hardlinks share an inode");
        assert_eq!((ash.3, busybox.3), (2, 2));
        assert!(ash.6.is_empty(), "data goes with the last link only");
        assert_eq!(busybox.6, b"BB");
        assert_eq!(by_name("bin/sh").1, 0o120777);
        assert_eq!(by_name("bin/sh").6, b"/usr/bin/busybox");
        assert_eq!(by_name("dev/console").1, 0o020600);
        assert_eq!(by_name("dev/console").5, (5, 1));
        assert_eq!(by_name("dev/null").5, (1, 3));
        assert_eq!(by_name("usr").3, 3, "usr has one subdirectory");
        let mut inodes: Vec<u32> = entries.iter().map(|e| e.2).collect();
        inodes.dedup();
        assert_eq!(inodes, (1..=9).collect::<Vec<_>>(), "sequential inodes");
    }

    #[test]
    fn bad_paths_and_links_are_refused() {
        let mut tree = Tree::new();
        assert!(
            tree.insert("../x", Node::Directory { mode: 0o755 })
                .is_err()
        );
        assert!(tree.insert("", Node::Directory { mode: 0o755 }).is_err());
        tree.insert(
            "a",
            Node::HardLink {
                target: "missing".into(),
            },
        )
        .unwrap();
        let err = write(&tree, 0, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("a: hardlink to missing"), "{err}");
        let mut tree = Tree::new();
        tree.insert("f", Node::Symlink { target: "x".into() })
            .unwrap();
        let err = tree
            .insert("f/g", Node::Directory { mode: 0o755 })
            .unwrap_err();
        assert!(matches!(err, CpioError::ParentNotDirectory { .. }));
    }
}
