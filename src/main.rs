use std::process::ExitCode;

use clap::Parser;
use pvescale::cli::{Cli, Command};
use pvescale::error::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    pvescale::logging::init(cli.global.verbose, cli.global.quiet);
    let result = match &cli.command {
        Command::Run(args) => pvescale::run::run(&cli.global, args),
        Command::Status(args) => pvescale::run::status(&cli.global, args),
        Command::Check(args) => pvescale::check::check(&cli.global, args),
        Command::History(args) => pvescale::actions::history(&cli.global, args),
        Command::Recommend(args) => pvescale::recommend::recommend(&cli.global, args),
        Command::Simulate(args) => pvescale::backtest::simulate(&cli.global, args),
    };
    match result {
        Ok(exit) => exit.into(),
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
