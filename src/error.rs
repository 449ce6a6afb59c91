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
