//! The failures that end a run, each with its exit code (see `pvescale --help`).

use std::process::ExitCode;

/// Exit codes, a contract with timers and scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Runtime = 1,
    Usage = 2,
    /// Some VMs failed; the others were handled.
    Partial = 3,
    /// Another run holds the lock (EX_TEMPFAIL).
    Locked = 75,
    /// The config is invalid (EX_CONFIG).
    Config = 78,
}

impl Exit {
    /// The one rule of a command's exit code: 1 when no cluster could be read, 3 when some
    /// clusters or VMs failed, else 0.
    pub fn of_outcome(cluster_failed: impl IntoIterator<Item = bool>, vm_failed: bool) -> Exit {
        let failed: Vec<bool> = cluster_failed.into_iter().collect();
        if !failed.is_empty() && failed.iter().all(|f| *f) {
            Exit::Runtime
        } else if vm_failed || failed.iter().any(|f| *f) {
            Exit::Partial
        } else {
            Exit::Ok
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Why a command could not do its job at all.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Config(String),
    #[error("another pvescale run holds the lock {0}; this run does nothing")]
    Locked(String),
    #[error("{0:#}")]
    Runtime(anyhow::Error),
}

impl Failure {
    pub fn exit(&self) -> Exit {
        match self {
            Failure::Config(_) => Exit::Config,
            Failure::Locked(_) => Exit::Locked,
            Failure::Runtime(_) => Exit::Runtime,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Runtime(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_one_rule() {
        assert_eq!(Exit::of_outcome([false, false], false), Exit::Ok);
        assert_eq!(Exit::of_outcome([false, false], true), Exit::Partial);
        assert_eq!(Exit::of_outcome([true, false], false), Exit::Partial);
        assert_eq!(Exit::of_outcome([true, true], false), Exit::Runtime);
        assert_eq!(Exit::of_outcome([], false), Exit::Ok);
    }
}
