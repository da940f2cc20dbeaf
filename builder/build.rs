//! Writes the man pages of both programs at build time (clap_mangen):
//! `hiperiso-build.1` with one page per verb (`hiperiso-build-install.1`,
//! …) and `hiperiso-log.1` with its verbs, into `man/` beside the
//! binaries (`target/debug/man/`, `target/release/man/`). The two CLI
//! files name nothing of their crates, so they are compiled here as they are.

use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "src/cli.rs"]
mod builder_cli;

#[allow(dead_code)]
#[path = "../runtime/src/bin/hiperiso-log/cli.rs"]
mod log_cli;

/// The page of `command` and, recursively, of each visible subcommand.
fn write_pages(command: clap::Command, prefix: &str, dir: &Path) -> std::io::Result<()> {
    let name = match prefix {
        "" => command.get_name().to_string(),
        _ => format!("{prefix}-{}", command.get_name()),
    };
    // A build script runs once: leaking the few page names is fine.
    let command = command.name(&*Box::leak(name.clone().into_boxed_str()));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)?;
    for sub in command.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            write_pages(sub.clone(), &name, dir)?;
        }
    }
    Ok(())
}

fn main() {
    use clap::CommandFactory;
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=../runtime/src/bin/hiperiso-log/cli.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let dir = out.ancestors().nth(3).unwrap_or(&out).join("man");
    std::fs::create_dir_all(&dir).expect("create the man page directory");
    let mut build = builder_cli::Cli::command();
    build.build();
    write_pages(build, "", &dir).expect("write hiperiso-build's man pages");
    let mut log = log_cli::Cli::command();
    log.build();
    write_pages(log, "", &dir).expect("write hiperiso-log's man pages");
}
