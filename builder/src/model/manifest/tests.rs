use super::*;

const GOOD: &str = r#"
[image]
name = "t"
seed = "s"
size = "128MiB"
source-date-epoch = 1

[sources.foo]
version = "1.0"
url = "http://example.invalid/foo-{version}.tar.gz"
watch = { index = "http://example.invalid/", regex = 'foo-([0-9.]+)\.tar\.gz' }

[sources.bar]
version = "2.0"
debian-source = "libbar"
file = "{package}_{version}.orig.tar.xz"

[profiles.default]
sources = ["foo", "bar"]
"#;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, Path::new("m.toml"))
}

fn invalid_of(text: &str) -> Invalid {
    match parse(text).unwrap_err() {
        ManifestError::Invalid(inv) => *inv,
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn parses_and_renders_urls() {
    let m = parse(GOOD).unwrap();
    assert_eq!(m.image.size, ByteSize(128 << 20));
    assert_eq!(m.image.table, PartitionTable::Gpt);
    let (name, profile) = m.profile(None).unwrap();
    assert_eq!(name, "default");
    let bar = m.source("bar").unwrap();
    assert_eq!(
        bar.urls(
            "bar",
            "2.0",
            &["http://m1/debian/".into(), "http://m2/debian".into()]
        )
        .unwrap(),
        vec![
            "http://m1/debian/pool/main/libb/libbar/libbar_2.0.orig.tar.xz",
            "http://m2/debian/pool/main/libb/libbar/libbar_2.0.orig.tar.xz"
        ]
    );
    assert!(bar.urls("bar", "2.0", &[]).is_err());
    assert_eq!(m.active_sources(profile).len(), 2);
    assert_eq!(
        m.source("foo").unwrap().file_name("foo", "1.1"),
        "foo-1.1.tar.gz"
    );
}

#[test]
fn a_payload_needs_what_it_is_made_from() {
    let text = GOOD.replace(
        "sources = [\"foo\", \"bar\"]",
        "sources = [\"foo\", \"bar\"]\npayload = \"steps\"",
    );
    let inv = invalid_of(&text);
    assert_eq!(inv.field, "profiles.default.payload", "{inv}");
    assert!(
        inv.message
            .contains("comes from `steps`, but the profile lists none"),
        "{inv}"
    );
    let text = text.replace(
        "payload = \"steps\"",
        "payload = \"steps\"\nsteps = [\"x\"]",
    );
    assert_eq!(
        parse(&text).unwrap().profiles["default"].payload,
        Some(PayloadFrom::Steps)
    );
    let inv = invalid_of(&text.replace("payload = \"steps\"", "payload = \"iso\""));
    assert_eq!(inv.field, "profiles.default.payload", "{inv}");
}

#[test]
fn unknown_key_names_line_and_field() {
    let text = GOOD.replace("version = \"2.0\"", "version = \"2.0\"\nshaa256 = \"x\"");
    let inv = invalid_of(&text);
    let line = text.lines().position(|l| l.starts_with("shaa256")).unwrap() + 1;
    assert_eq!(inv.line, line, "{inv}");
    assert!(inv.message.contains("unknown field `shaa256`"), "{inv}");
    assert_eq!(inv.field, "sources.bar.shaa256", "{inv}");
    assert!(
        inv.to_string().starts_with(&format!("m.toml:{line}:")),
        "{inv}"
    );
}

#[test]
fn bad_sha256_names_the_source() {
    let text = GOOD.replace("version = \"1.0\"", "version = \"1.0\"\nsha256 = \"XYZ\"");
    let inv = invalid_of(&text);
    assert!(inv.message.contains("not 64 lowercase hex"), "{inv}");
    assert!(inv.field.starts_with("sources.foo"), "{inv}");
    assert!((8..=12).contains(&inv.line), "{inv}");
}

#[test]
fn unknown_profile_source_points_at_the_entry() {
    let text = GOOD.replace(r#"sources = ["foo", "bar"]"#, r#"sources = ["foo", "baz"]"#);
    let inv = invalid_of(&text);
    let line = text.lines().position(|l| l.contains("\"baz\"")).unwrap() + 1;
    assert_eq!(inv.line, line, "{inv}");
    assert_eq!(inv.field, "profiles.default.sources.1");
    assert!(inv.message.contains("no source named `baz`"));
}

#[test]
fn bad_table_and_size() {
    let inv = invalid_of(&GOOD.replace("seed = \"s\"", "seed = \"s\"\ntable = \"apm\""));
    assert_eq!((inv.line, inv.field.as_str()), (5, "image.table"), "{inv}");
    let inv = invalid_of(&GOOD.replace("128MiB", "12 parsecs"));
    assert_eq!((inv.line, inv.field.as_str()), (5, "image.size"), "{inv}");
}

#[test]
fn byte_sizes() {
    assert_eq!(ByteSize::parse("2GiB").unwrap(), ByteSize(2 << 30));
    assert_eq!(ByteSize::parse("512M").unwrap(), ByteSize(512 << 20));
    assert_eq!(ByteSize::parse("1000").unwrap(), ByteSize(1000));
    assert!(ByteSize::parse("GiB").is_err());
    assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
}

#[test]
fn pool_prefix() {
    assert_eq!(debian_pool_prefix("linux"), "l");
    assert_eq!(debian_pool_prefix("libslirp"), "libs");
}
