//! `hiperiso-build`: parse arguments, dispatch one verb, report errors.
//! Keep one match arm per verb calling a `commands` function.

use std::process::ExitCode;

use clap::Parser;
use hiperiso_build::cli::{Cli, Command, ConfigCommand};
use hiperiso_build::commands::{
    self, build, bump, completions, config, doctor, fetch, image, inspect, install, keys, lock,
    run as run_verb,
};

fn run(cli: Cli) -> commands::Result<()> {
    let settings = commands::settings(&cli.global);
    let s = &settings;
    match cli.command {
        Command::Summary => fetch::summary(s),
        Command::Fetch(args) => fetch::fetch(s, &args.names).map(|_| ()),
        Command::Pin(args) => fetch::pin(s, &args.names, args.force),
        Command::Bump(args) => {
            bump::run(s, &args.names, args.to.as_deref(), args.latest, args.check)
        }
        Command::Lock(args) => lock::lock(s, args.update.as_deref()),
        Command::Build(args) => build::build(s, &args),
        Command::Verify(args) => build::verify(s, &args),
        Command::Image(args) => image::image(s, &args).map(drop),
        Command::Install(args) => install::install(s, &args),
        Command::Inspect(args) => inspect::inspect(&args),
        Command::Run(args) => run_verb::run(s, &args.into()),
        Command::Clean => build::clean(s),
        Command::Gc => build::gc(s),
        Command::Doctor(args) => doctor::doctor(s, args.json),
        Command::Config(ConfigCommand::Check { file }) => config::check(&file),
        Command::Completions(args) => completions::completions(args.shell),
        Command::Keys(args) => keys::keys(s, &args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The message and its causes, without a backtrace even when
            // RUST_BACKTRACE is set: these are user-facing errors.
            let code = error.exit_code();
            let error = anyhow::Error::from(error);
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(code)
        }
    }
}
