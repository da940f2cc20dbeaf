//! QEMU's trace-events declaration format (`trace-events-all`), and the
//! decoded trace event that both trace decoders (`simpletrace`, `logtrace`)
//! produce.
//!
//! A declaration line looks like
//! `[props] name(type arg, ...) "format" PRIx64 "more format"`.
//! The argument list tells the simpletrace decoder how to split a record's
//! payload (strings are `u32` length + bytes, everything else a `u64`); the
//! format tells the log-backend decoder how to read arguments back out of a
//! printed line.

use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors while reading an events file.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("cannot read events file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Signatures (QEMU 7.2) of the events `trace_summary` understands and of
/// the events hiperiso's standard and detailed trace levels record
/// (overlays/esp/EFI/hiperiso/trace/), so traces decode without `--events`.
/// Same syntax as `trace-events-all`.
const BUILTIN_EVENTS: &str = r#"
ide_exec_cmd(void *bus, void *state, uint32_t cmd) "IDE exec cmd: bus %p; state %p; cmd 0x%02x"
ide_reset(void *s) "IDEstate %p"
ahci_cmd_done(void *s, int port) "ahci(%p)[%d]: cmd done"
ahci_reset(void *s) "ahci(%p): HBA reset"
dma_blk_io(void *dbs, void *bs, int64_t offset, bool to_dev) "dbs=%p bs=%p offset=%" PRId64 " to_dev=%d"
pci_update_mappings_add(const char *dev, uint32_t bus, uint32_t slot, uint32_t func, int bar, uint64_t addr, uint64_t size) "%s %02x:%02x.%x %d,0x%"PRIx64"+0x%"PRIx64
pci_update_mappings_del(const char *dev, uint32_t bus, uint32_t slot, uint32_t func, int bar, uint64_t addr, uint64_t size) "%s %02x:%02x.%x %d,0x%"PRIx64"+0x%"PRIx64
kvm_run_exit(int cpu_index, uint32_t reason) "cpu_index %d, reason %d"
fw_cfg_select(void *s, uint16_t key_value, const char *key_name, int ret) "%p key 0x%04" PRIx16 " '%s', ret: %d"
fw_cfg_read(void *s, uint64_t ret) "%p = 0x%"PRIx64
cpu_in(unsigned int addr, char size, unsigned int val) "addr 0x%x(%c) value %u"
cpu_out(unsigned int addr, char size, unsigned int val) "addr 0x%x(%c) value %u"
pci_cfg_read(const char *dev, uint32_t bus, uint32_t slot, uint32_t func, unsigned offs, unsigned val) "%s %02x:%02x.%x @0x%x -> 0x%x"
pci_cfg_write(const char *dev, uint32_t bus, uint32_t slot, uint32_t func, unsigned offs, unsigned val) "%s %02x:%02x.%x @0x%x <- 0x%x"
ide_atapi_cmd(void *s, uint8_t cmd) "IDEState: %p; cmd: 0x%02x"
ide_atapi_cmd_read(void *s, const char *method, int lba, int nb_sectors) "IDEState: %p; read %s: LBA=%d nb_sectors=%d"
ide_atapi_cmd_error(void *s, int sense_key, int asc) "IDEState: %p; sense=0x%x asc=0x%x"
ide_sector_read(int64_t sector_num, int nsectors) "sector=%"PRId64" nsectors=%d"
cd_read_sector(int lba) "lba=%d"
blk_co_preadv(void *blk, void *bs, int64_t offset, int64_t bytes, int flags) "blk %p bs %p offset %"PRId64" bytes %" PRId64 " flags 0x%x"
blk_co_pwritev(void *blk, void *bs, int64_t offset, int64_t bytes, int flags) "blk %p bs %p offset %"PRId64" bytes %" PRId64 " flags 0x%x"
virtio_blk_handle_read(void *vdev, void *req, uint64_t sector, size_t nsectors) "vdev %p req %p sector %"PRIu64" nsectors %zu"
runstate_set(int current_state, const char *current_state_str, int new_state, const char *new_state_str) "current_run_state %d (%s) new_state %d (%s)"
qemu_system_shutdown_request(int reason) "reason=%d"
qemu_system_powerdown_request(void) ""
"#;

/// One argument of an event declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub ty: String,
    pub name: Arc<str>,
    /// `const char *` and friends: recorded as length + bytes by simpletrace.
    pub is_string: bool,
}

/// One piece of a printf-style format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatPiece {
    Literal(String),
    /// A conversion such as `%02x`; `star_width` means `%*x` (consumes an
    /// extra argument).
    Conversion {
        conv: char,
        star_width: bool,
    },
}

/// One declared event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDecl {
    pub name: Arc<str>,
    pub args: Vec<ArgDecl>,
    pub format: Vec<FormatPiece>,
}

/// Declared events by name.
#[derive(Debug, Clone, Default)]
pub struct EventCatalog {
    by_name: HashMap<Arc<str>, Arc<EventDecl>>,
}

impl EventCatalog {
    /// The signatures built into hiperiso-log (see `BUILTIN_EVENTS`).
    pub fn builtin() -> Self {
        let mut catalog = EventCatalog::default();
        for line in BUILTIN_EVENTS.lines() {
            if let Some(decl) = parse_decl_line(line).expect("builtin events parse") {
                catalog.insert(decl);
            }
        }
        catalog
    }

    /// Parse a `trace-events` file; `path` only names it in errors.
    pub fn parse(reader: impl BufRead, path: &Path) -> Result<Self, EventsError> {
        let mut catalog = EventCatalog::default();
        for (index, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| EventsError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            match parse_decl_line(&line) {
                Ok(Some(decl)) => catalog.insert(decl),
                Ok(None) => {}
                Err(reason) => {
                    return Err(EventsError::Syntax {
                        path: path.to_path_buf(),
                        line: index + 1,
                        reason,
                    });
                }
            }
        }
        Ok(catalog)
    }

    /// Read and parse an events file from disk.
    pub fn load(path: &Path) -> Result<Self, EventsError> {
        let file = std::fs::File::open(path).map_err(|source| EventsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(std::io::BufReader::new(file), path)
    }

    /// Add every declaration of `other`, replacing same-named ones.
    pub fn extend(&mut self, other: EventCatalog) {
        self.by_name.extend(other.by_name);
    }

    pub fn insert(&mut self, decl: EventDecl) {
        self.by_name.insert(decl.name.clone(), Arc::new(decl));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<EventDecl>> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// `Ok(None)` for blank and comment lines.
fn parse_decl_line(line: &str) -> Result<Option<EventDecl>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let open = line.find('(').ok_or("missing '(' after the event name")?;
    // Properties such as `disable` or `vcpu` precede the name.
    let name = line[..open]
        .split_whitespace()
        .last()
        .ok_or("missing event name")?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("invalid event name {name:?}"));
    }
    let close = line[open..]
        .find(')')
        .map(|i| open + i)
        .ok_or("missing ')' after the arguments")?;
    let args = parse_args(&line[open + 1..close])?;
    let format = parse_format(&join_format(&line[close + 1..])?);
    Ok(Some(EventDecl {
        name: name.into(),
        args,
        format,
    }))
}

fn parse_args(text: &str) -> Result<Vec<ArgDecl>, String> {
    let text = text.trim();
    if text.is_empty() || text == "void" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|arg| {
            let arg = arg.trim();
            let split = arg
                .rfind(|c: char| c == '*' || c.is_whitespace())
                .ok_or_else(|| format!("argument {arg:?} has no type"))?;
            let (ty, name) = (arg[..=split].trim(), arg[split + 1..].trim());
            if name.is_empty() || ty.is_empty() {
                return Err(format!("argument {arg:?} has no name"));
            }
            Ok(ArgDecl {
                is_string: is_string_type(ty),
                ty: ty.to_string(),
                name: name.into(),
            })
        })
        .collect()
}

/// Same rule as QEMU's tracetool: `char *` with exactly one `*`.
fn is_string_type(ty: &str) -> bool {
    let ty = ty.trim_start();
    let base = ty.strip_prefix("const ").unwrap_or(ty).trim_start();
    base.starts_with("char") && ty.matches('*').count() == 1
}

/// Concatenate `"a" PRIx64 "b"` into `a%xb` style text (the `%` before a
/// PRI macro is inside the previous quoted piece).
fn join_format(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.ok_or("unterminated format string")?;
            out.push_str(&unescape_c(&after[..end]));
            rest = after[end + 1..].trim_start();
        } else {
            let len = rest
                .find(|c: char| c.is_whitespace() || c == '"')
                .unwrap_or(rest.len());
            let word = &rest[..len];
            let conv = word
                .strip_prefix("PRI")
                .and_then(|m| m.chars().next())
                .ok_or_else(|| format!("unexpected {word:?} in format"))?;
            out.push(conv);
            rest = rest[len..].trim_start();
        }
    }
    Ok(out)
}

fn unescape_c(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn parse_format(text: &str) -> Vec<FormatPiece> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            literal.push('%');
            continue;
        }
        let mut star_width = false;
        let mut conv = None;
        for spec in chars.by_ref() {
            match spec {
                '-'
                | '+'
                | ' '
                | '#'
                | '.'
                | '0'..='9'
                | 'h'
                | 'l'
                | 'z'
                | 'j'
                | 't'
                | 'L'
                | 'q' => {}
                '*' => star_width = true,
                other => {
                    conv = Some(other);
                    break;
                }
            }
        }
        let Some(conv) = conv else { break };
        if !literal.is_empty() {
            pieces.push(FormatPiece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(FormatPiece::Conversion { conv, star_width });
    }
    if !literal.is_empty() {
        pieces.push(FormatPiece::Literal(literal));
    }
    pieces
}

/// FNV-1a: the maps on the per-event path hash short keys (event names, ids,
/// ports) tens of millions of times in a large trace, where SipHash shows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

/// A `HashMap` with [`FnvHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FnvHasher>>;

/// An argument value of a decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// simpletrace stores every integer as a `u64`; the log backend's
    /// `%u`/`%x`/`%p` also land here.
    Uint(u64),
    /// A negative `%d` from the log backend.
    Int(i64),
    Str(String),
}

impl Value {
    /// The value as a `u64` (negative numbers as two's complement, like
    /// simpletrace records them); `None` for strings.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(v) => Some(*v),
            Value::Int(v) => Some(*v as u64),
            Value::Str(_) => None,
        }
    }

    /// The value as an `i64`: simpletrace stores a C `int` sign-extended, so
    /// `0xffff_ffff_ffff_ffff` reads back as -1.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Uint(v) => Some(*v as i64),
            Value::Int(v) => Some(*v),
            Value::Str(_) => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Uint(v) => write!(f, "0x{v:x}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// One named argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: Arc<str>,
    pub value: Value,
}

/// One decoded trace event, from either backend. Decoders refill one
/// instance per record so decoding a large trace does not allocate per event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceEvent {
    pub name: Arc<str>,
    /// simpletrace: host monotonic ns; log backend: wall-clock µs × 1000
    /// (only with `-msg timestamp=on`).
    pub timestamp_ns: Option<u64>,
    /// simpletrace: the QEMU process id; log backend: the thread id.
    pub pid: Option<u32>,
    /// Arguments by name; empty when the event was not declared (see `raw`).
    pub args: Vec<Arg>,
    /// What could not be split into arguments: the printed text (log
    /// backend) or the payload as hex words (simpletrace, undeclared event).
    pub raw: Option<String>,
}

impl TraceEvent {
    pub fn arg(&self, name: &str) -> Option<&Value> {
        self.args
            .iter()
            .find(|a| &*a.name == name)
            .map(|a| &a.value)
    }

    pub fn arg_u64(&self, name: &str) -> Option<u64> {
        self.arg(name).and_then(Value::as_u64)
    }

    pub fn arg_str(&self, name: &str) -> Option<&str> {
        self.arg(name).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_declaration_with_pri_macros() {
        let decl = parse_decl_line(
            r#"disable blk_co_preadv(void *blk, void *bs, int64_t offset, int64_t bytes, int flags) "blk %p bs %p offset %"PRId64" bytes %" PRId64 " flags 0x%x""#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(&*decl.name, "blk_co_preadv");
        let names: Vec<&str> = decl.args.iter().map(|a| &*a.name).collect();
        assert_eq!(names, ["blk", "bs", "offset", "bytes", "flags"]);
        assert_eq!(decl.args[0].ty, "void *");
        assert!(decl.args.iter().all(|a| !a.is_string));
        let convs: String = decl
            .format
            .iter()
            .filter_map(|p| match p {
                FormatPiece::Conversion { conv, .. } => Some(*conv),
                FormatPiece::Literal(_) => None,
            })
            .collect();
        assert_eq!(convs, "ppddx");
    }

    #[test]
    fn string_args_and_void() {
        let decl = parse_decl_line(r#"foo(const char *name, char* other, char **not_string) "%s""#)
            .unwrap()
            .unwrap();
        let flags: Vec<bool> = decl.args.iter().map(|a| a.is_string).collect();
        assert_eq!(flags, [true, true, false]);
        let decl = parse_decl_line(r#"vcpu guest_cpu_enter(void)"#)
            .unwrap()
            .unwrap();
        assert!(decl.args.is_empty());
        assert_eq!(parse_decl_line("  # comment").unwrap(), None);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let text = "ok(int a) \"%d\"\nbroken(int a \"%d\"\n";
        let err = EventCatalog::parse(text.as_bytes(), Path::new("x.events")).unwrap_err();
        assert!(err.to_string().starts_with("x.events:2: "), "{err}");
    }

    #[test]
    fn parses_every_declaration_of_the_host_qemu() {
        // Debian's qemu-system-common ships QEMU's full declaration list.
        let path = Path::new("/usr/share/qemu/trace-events-all");
        if !hiperiso_prereq::file(&path.to_string_lossy(), "qemu-system-common") {
            return;
        }
        let catalog = EventCatalog::load(path).unwrap();
        assert!(catalog.len() > 4000, "{}", catalog.len());
        assert!(catalog.get("pci_cfg_read").is_some());
    }

    #[test]
    fn builtin_catalog_has_summary_events() {
        let catalog = EventCatalog::builtin();
        for name in [
            "cpu_in",
            "pci_cfg_write",
            "ide_atapi_cmd_read",
            "blk_co_preadv",
        ] {
            assert!(catalog.get(name).is_some(), "{name}");
        }
    }
}
