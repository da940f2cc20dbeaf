//! `hiperiso-build completions SHELL`: the completion script on stdout
//! (the man pages are written by build.rs).

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, ShellArg};
use crate::commands::error::Result;

/// `hiperiso-build completions SHELL`.
pub fn completions(shell: ShellArg) -> Result<()> {
    let shell = match shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
    };
    let mut command = Cli::command();
    clap_complete::generate(
        shell,
        &mut command,
        "hiperiso-build",
        &mut std::io::stdout(),
    );
    Ok(())
}
