//! A small shell-style glob matcher for `iso_overrides` keys:
//! `*` (any run of characters), `?` (one character), `[abc]`, `[a-z]`,
//! `[!x]`. Matching is ASCII case-insensitive, as exFAT names are.

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    match_from(&pattern, &name)
}

/// How specific a pattern is: the number of characters it matches literally.
pub fn specificity(pattern: &str) -> usize {
    let mut count = 0;
    let mut in_class = false;
    for c in pattern.chars() {
        match c {
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '*' | '?' if !in_class => {}
            _ if !in_class => count += 1,
            _ => {}
        }
    }
    count
}

fn match_from(pattern: &[char], name: &[char]) -> bool {
    // Iterative matcher with single-star backtracking (linear in practice).
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                '*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                '?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(pattern, p, name[n]) {
                        if matched {
                            p = next;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == '[' {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                c if c.eq_ignore_ascii_case(&name[n]) => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((star_p, star_n)) => {
                p = star_p + 1;
                n = star_n + 1;
                star = Some((star_p, star_n + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Match `c` against the class starting at `pattern[start] == '['`.
/// Returns (matched, index after `]`), or None when the class is unterminated.
fn match_class(pattern: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = matches!(pattern.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let c = c.to_ascii_lowercase();
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let lo = pattern[i];
        if lo == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = pattern[i + 2];
            if (lo.to_ascii_lowercase()..=hi.to_ascii_lowercase()).contains(&c) {
                matched = true;
            }
            i += 3;
        } else {
            if lo.to_ascii_lowercase() == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_questions() {
        assert!(matches("*.iso", "debian.iso"));
        assert!(matches("*.iso", "DEBIAN.ISO"));
        assert!(!matches("*.iso", "debian.img"));
        assert!(matches("win*", "Win11_23H2.iso"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("debian-1?.*", "debian-12.iso"));
        assert!(!matches("debian-1?.*", "debian-1.iso"));
        assert!(matches("**x", "x"));
    }

    #[test]
    fn classes() {
        assert!(matches("[ab]*.iso", "b.iso"));
        assert!(!matches("[ab]*.iso", "c.iso"));
        assert!(matches("v[0-9].iso", "v7.iso"));
        assert!(!matches("v[!0-9].iso", "v7.iso"));
        assert!(matches("v[!0-9].iso", "vx.iso"));
        assert!(matches("[]]x", "]x"));
        assert!(matches("[x", "[x"), "unterminated class is literal");
    }

    #[test]
    fn specificity_counts_literals() {
        assert_eq!(specificity("*"), 0);
        assert_eq!(specificity("*.iso"), 4);
        assert_eq!(specificity("win11*.iso"), 9);
        assert_eq!(specificity("[ab]?.iso"), 4);
    }
}
