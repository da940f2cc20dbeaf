//! Debian version numbers (`[epoch:]upstream[-revision]`) and their ordering,
//! as dpkg defines it (deb-version(7)), plus dependency relations.

use std::cmp::Ordering;
use std::fmt;

/// A parsed Debian version. Ordering follows dpkg; equality is dpkg equality
/// (`1.0` == `0:1.0`).
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u64,
    upstream: String,
    revision: String,
    text: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid Debian version {text:?}: {reason}")]
pub struct VersionError {
    pub text: String,
    pub reason: &'static str,
}

impl Version {
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let error = |reason| VersionError {
            text: text.to_string(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(error("empty"));
        }
        let (epoch, rest) = match trimmed.split_once(':') {
            Some((epoch, rest)) => (
                epoch.parse().map_err(|_| error("epoch is not a number"))?,
                rest,
            ),
            None => (0, trimmed),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((upstream, revision)) => (upstream, revision),
            None => (rest, ""),
        };
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(error("upstream version must start with a digit"));
        }
        Ok(Self {
            epoch,
            upstream: upstream.to_string(),
            revision: revision.to_string(),
            text: trimmed.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(&self.upstream, &other.upstream))
            .then_with(|| compare_part(&self.revision, &other.revision))
    }
}

/// dpkg's character order for the non-digit parts: `~` sorts before
/// everything (even the end), letters before non-letters.
fn char_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefix.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ca = char_order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let cb = char_order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ca != cb {
                return ca.cmp(&cb);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // Numeric part, compared without leading zeros.
        let start_a = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let start_b = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let na = strip_zeros(&a[start_a..i]);
        let nb = strip_zeros(&b[start_b..j]);
        let ordering = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

fn strip_zeros(digits: &[u8]) -> &[u8] {
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    &digits[first..]
}

/// A version relation in a dependency: `<<`, `<=`, `=`, `>=`, `>>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Earlier,
    EarlierOrEqual,
    Exactly,
    LaterOrEqual,
    Later,
}

impl Relation {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "<<" => Self::Earlier,
            "<=" | "<" => Self::EarlierOrEqual,
            "=" => Self::Exactly,
            ">=" | ">" => Self::LaterOrEqual,
            ">>" => Self::Later,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earlier => "<<",
            Self::EarlierOrEqual => "<=",
            Self::Exactly => "=",
            Self::LaterOrEqual => ">=",
            Self::Later => ">>",
        }
    }

    /// Whether `candidate` satisfies `candidate <relation> wanted`.
    pub fn holds(self, candidate: &Version, wanted: &Version) -> bool {
        let ordering = candidate.cmp(wanted);
        match self {
            Self::Earlier => ordering == Ordering::Less,
            Self::EarlierOrEqual => ordering != Ordering::Greater,
            Self::Exactly => ordering == Ordering::Equal,
            Self::LaterOrEqual => ordering != Ordering::Less,
            Self::Later => ordering == Ordering::Greater,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn dpkg_ordering() {
        let ascending = [
            "1.0~rc1",
            "1.0",
            "1.0-1",
            "1.0-1+b1",
            "1.0a",
            "1.0+dfsg",
            "1.00.1",
            "1.2",
            "1.10",
            "1:0.1",
            "1:7.2+dfsg-7+deb12u18",
            "1:7.2+dfsg-7+deb12u18+b3",
        ];
        for pair in ascending.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("0:1.0"), v("1.0"));
        assert_eq!(v("1.01"), v("1.1"));
        assert!(v("1.0~") < v("1.0"));
        assert!(v("1.0~~") < v("1.0~"));
    }

    #[test]
    fn relations() {
        assert!(Relation::LaterOrEqual.holds(&v("2.36-9"), &v("2.34")));
        assert!(!Relation::Later.holds(&v("1:7.2"), &v("1:7.2")));
        assert!(Relation::Later.holds(&v("1:7.2+dfsg-7"), &v("1:7.2+dfsg~")));
        assert!(Relation::Exactly.holds(&v("6.1.176-1"), &v("6.1.176-1")));
        assert!(Relation::Earlier.holds(&v("1.0~rc1"), &v("1.0")));
    }

    #[test]
    fn rejects_bad_versions() {
        assert!(Version::parse("").is_err());
        assert!(Version::parse("x:1").is_err());
        assert!(Version::parse("abc").is_err());
    }
}
