//! The structure holds (issue 15): no module cycle in any crate, and only
//! the builder's top layer sees the command line, the manifest file and the
//! lock file.
//!
//! A file's module path comes from its place (`a/b.rs` and `a/b/mod.rs` are
//! `a::b`); every `crate::…` path in it, `use crate::{x, y::z}` groups
//! included, is an arrow to the longest module of that path that is a file.
//! Arrows from a module to its own descendants or ancestors that only
//! declare (`mod x;`) are not imports and are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use hiperiso_tests::workspace_root;

const CRATES: [&str; 4] = ["builder/src", "installer/src", "runtime/src", "stick/src"];

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_crate_has_a_module_cycle() {
    let mut report = String::new();
    for krate in CRATES {
        let files = rust_files(&workspace_root().join(krate));
        for cycle in cycles(&graph(&files)) {
            report.push_str(&format!("{krate}: {}\n", cycle.join(" <-> ")));
        }
    }
    assert!(report.is_empty(), "module cycles:\n{report}");
}

#[test]
fn only_the_builders_top_layer_sees_the_cli_the_manifest_file_and_the_lock_file() {
    let src = workspace_root().join("builder/src");
    let top = |rel: &str| {
        rel == "main.rs" || rel == "cli.rs" || rel == "project.rs" || rel.starts_with("commands/")
    };
    let mut found = Vec::new();
    for (rel, text) in rust_files(&src) {
        for needle in [
            "clap::",
            "anyhow",
            "load_manifest",
            "Manifest::load",
            "Lock::read",
        ] {
            // model/ defines the loaders; only the top layer may call them.
            let defines = rel.starts_with("model/") && needle != "clap::" && needle != "anyhow";
            if text.contains(needle) && !top(&rel) && !defines {
                found.push(format!("builder/src/{rel}: {needle}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "outside the top layer:\n{}",
        found.join("\n")
    );
}

/// Files stay small enough to read whole: about 600 lines, tests included.
#[test]
fn no_rust_file_is_much_over_600_lines() {
    const LIMIT: usize = 640;
    let root = workspace_root();
    let mut long = Vec::new();
    for dir in ["builder", "installer", "runtime", "stick", "tests"] {
        for (rel, text) in rust_files(&root.join(dir)) {
            let lines = text.lines().count();
            if lines > LIMIT && !rel.starts_with("target/") {
                long.push(format!("{dir}/{rel}: {lines} lines"));
            }
        }
    }
    assert!(long.is_empty(), "over {LIMIT} lines:\n{}", long.join("\n"));
}

/// The checker itself finds a cycle, through a `use` group and a full path.
#[test]
fn the_checker_sees_a_cycle() {
    let files = vec![
        ("lib.rs".into(), "mod a; mod b; mod c;".into()),
        ("a.rs".into(), "use crate::{b::Thing, c};".into()),
        (
            "b.rs".into(),
            "fn f() { crate::a::g::h(); }\n#[cfg(test)]\nmod tests { use crate::d::Z; }".into(),
        ),
        ("c.rs".into(), "pub struct Y;".into()),
        ("d/mod.rs".into(), "use crate::{c::Y, b};".into()),
    ];
    assert_eq!(
        cycles(&graph(&files)),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
}

fn rust_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                // src/bin/*: separate crates of their own; fuzz/: not a member.
                let name = path.file_name().unwrap_or_default();
                if name != "bin" && name != "fuzz" && name != "target" {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `a/b.rs`, `a/b/mod.rs` -> `a::b`; `lib.rs`, `main.rs` -> `` (the root).
fn module_of(rel: &str) -> String {
    let rel = rel.strip_suffix(".rs").unwrap();
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    if rel == "lib" || rel == "main" || rel == "mod" {
        String::new()
    } else {
        rel.replace('/', "::")
    }
}

fn graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeSet<String> = files.iter().map(|(rel, _)| module_of(rel)).collect();
    let mut graph = Graph::new();
    for (rel, text) in files {
        let from = module_of(rel);
        let arrows = graph.entry(from.clone()).or_default();
        for path in crate_paths(text) {
            // the longest prefix of the path that is a file's module
            let segments: Vec<&str> = path.split("::").collect();
            let to = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|m| modules.contains(m));
            if let Some(to) = to.filter(|to| *to != from && !from.is_empty() && !to.is_empty()) {
                arrows.insert(to);
            }
        }
    }
    graph
}

/// `text` without comments and without inline `#[cfg(test)] mod … { … }`
/// blocks: a unit test's imports are not the module's structure.
fn code_of(text: &str) -> String {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let (Some(brace), Some(semi)) = (after.find('{'), after.find(';')) else {
            rest = &after[1..];
            continue;
        };
        if semi < brace {
            // `#[cfg(test)] mod tests;` or an item without a body
            rest = &after[semi + 1..];
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[brace..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = brace + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every `crate::a::b…` path in `text`, `{…}` groups expanded.
fn crate_paths(text: &str) -> Vec<String> {
    let code = code_of(text);
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `hiperiso_crate::`
        }
        expand("", rest, &mut out);
    }
    out
}

/// Reads one path (or group) at the start of `text`, prefixed by `prefix`.
fn expand(prefix: &str, text: &str, out: &mut Vec<String>) {
    let text = text.trim_start();
    if let Some(inner) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(prefix, &inner[start..i], out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(prefix, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let path = text[..end].trim_end_matches(':');
    let joined = match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}::{path}"),
    };
    if text[end..].trim_start().starts_with('{') && text[..end].ends_with("::") {
        expand(&joined, &text[end..], out);
    } else if !joined.is_empty() && joined != "self" {
        out.push(joined.trim_end_matches("::self").to_string());
    }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.index[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found.sort();
    s.found
}
