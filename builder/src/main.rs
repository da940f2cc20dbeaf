//! `hiperiso-build`: parse arguments, dispatch one verb, report errors.
//! Keep one match arm per verb calling a library function.

use std::process::ExitCode;

use clap::Parser;
use hiperiso_build::Context;
use hiperiso_build::cli::{Cli, Command};
use hiperiso_build::commands::{
    build as build_cmd, bump, disk as disk_cmd, fetch as sources, not_implemented,
};
use hiperiso_build::debian::closure;
use hiperiso_build::vm as run;

fn run(cli: Cli) -> hiperiso_build::commands::Result<()> {
    let ctx = Context::from_args(&cli.global);
    match cli.command {
        Command::Summary => sources::summary(&ctx),
        Command::Fetch(args) => sources::fetch(&ctx, &args.names).map(|_| ()),
        Command::Pin(args) => sources::pin(&ctx, &args.names, args.force),
        Command::Bump(args) => bump::run(
            &ctx,
            &args.names,
            args.to.as_deref(),
            args.latest,
            args.check,
        ),
        Command::Lock(args) => closure::lock_verb(&ctx, args.update.as_deref()),
        Command::Build(args) => build_cmd::build(&ctx, &args),
        Command::Verify(args) => build_cmd::verify(&ctx, &args),
        Command::Image(args) => disk_cmd::image(&ctx, &args),
        Command::Install(args) => disk_cmd::install(&ctx, &args),
        Command::Inspect(args) => disk_cmd::inspect(&ctx, &args),
        Command::Run(args) => run::run(&ctx, &args.into()).map(|_| ()),
        Command::Clean => build_cmd::clean(&ctx),
        Command::Gc => build_cmd::gc(&ctx),
        Command::Doctor => not_implemented("doctor", 8),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The message and its causes, without a backtrace even when
            // RUST_BACKTRACE is set: these are user-facing errors.
            let error = anyhow::Error::from(error);
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
