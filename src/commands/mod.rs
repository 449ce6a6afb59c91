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

/// How a history command (`recommend`, `simulate`) went, per cluster: whether it could be read,
/// and whether any of its VMs failed.
pub struct ClusterOutcome {
    pub read: bool,
    pub vmids: Vec<u32>,
    pub vm_failed: bool,
}

/// The end of a history command: `--vm` naming a VM no readable cluster has is a failure
/// with the likely causes; else the exit code by the one rule.
pub fn history_exit(vm: Option<u32>, clusters: &[ClusterOutcome]) -> Result<Exit, Failure> {
    if let Some(id) = vm
        && !clusters.iter().any(|c| c.vmids.contains(&id))
        && clusters.iter().any(|c| c.read)
    {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "VM {id} is not in any cluster (or is a template, or the token lacks VM.Audit on /vms/{id})"
        )));
    }
    Ok(Exit::of_outcome(
        clusters.iter().map(|c| !c.read),
        clusters.iter().any(|c| c.vm_failed),
    ))
}

/// The local time zone (schedule windows, a chart's times), else UTC with a warning.
pub fn local_zone_or_utc() -> jiff::tz::TimeZone {
    crate::schedule::local_zone().unwrap_or_else(|e| {
        log::warn!("{e}; UTC is used instead");
        jiff::tz::TimeZone::UTC
    })
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
