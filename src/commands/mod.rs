//! The commands: each loads what it needs, asks the library, and returns what the face
//! (`main.rs`) prints and the exit code. The library below never imports `cli`.

pub mod check;
pub mod history;
pub mod recommend;
pub mod run;
pub mod simulate;

use crate::cli::GlobalArgs;
use crate::config::{self, Config, SystemEnv};
use crate::error::{Exit, Failure};

/// What a command hands the face: its standard output, and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub output: String,
    pub exit: Exit,
}

/// Loads and validates the config; any problem is a config failure (exit 78).
pub fn load_config(global: &GlobalArgs) -> Result<Config, Failure> {
    let path = config::config_path(global.config.clone(), &SystemEnv);
    let (config, warnings) = config::load(&path).map_err(|e| Failure::Config(e.to_string()))?;
    for warning in warnings {
        log::warn!("{warning}");
    }
    Ok(config)
}
