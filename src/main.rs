use std::process::ExitCode;

use clap::Parser;
use pvescale::cli::{Cli, Command};
use pvescale::commands;
use pvescale::error::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    pvescale::logging::init(cli.global.verbose, cli.global.quiet);
    let result = match &cli.command {
        Command::Run(args) => commands::run::run(&cli.global, args),
        Command::Status(args) => commands::run::status(&cli.global, args),
        Command::Check(args) => commands::check::check(&cli.global, args),
        Command::History(args) => commands::history::history(&cli.global, args),
        Command::Recommend(args) => commands::recommend::recommend(&cli.global, args),
        Command::Simulate(args) => commands::simulate::simulate(&cli.global, args),
    };
    match result {
        Ok(finished) => {
            print!("{}", finished.output);
            finished.exit.into()
        }
        Err(failure) => {
            let exit = failure.exit();
            // Another run holding the lock is routine under a timer: say it quietly.
            if exit == Exit::Locked {
                log::info!("{failure}");
            } else {
                log::error!("{failure}");
            }
            exit.into()
        }
    }
}
