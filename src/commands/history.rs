//! `pvescale history`: what runs did, from the history file (no API call, no secret needed).

use super::Finished;
use crate::cli::{GlobalArgs, HistoryArgs, HistoryFormat};
use crate::config::{self, Env, SystemEnv};
use crate::error::{Exit, Failure};
use crate::history::{Filter, Shown, show, since};

/// `pvescale history [--vm ID] [--cluster NAME] [--since 24h] [--output table|json|svg]`.
pub fn history(global: &GlobalArgs, args: &HistoryArgs) -> Result<Finished, Failure> {
    let path = config::config_path(global.config.clone(), &SystemEnv);
    let (config, _) =
        config::load_with(&path, &SecretsNotNeeded).map_err(|e| Failure::Config(e.to_string()))?;
    let dir = config.resolved_state_dir(&SystemEnv);
    let filter = Filter {
        vmid: args.vm,
        cluster: args.cluster.clone(),
        since: args.since.map(|d| since(crate::clock::now(), d)),
    };
    let now = crate::clock::now();
    let shown = match args.output {
        HistoryFormat::Table => Shown::Table,
        HistoryFormat::Json => Shown::Json,
        HistoryFormat::Svg => Shown::Chart {
            now,
            zone: super::local_zone_or_utc(),
        },
    };
    let output = show(&dir, &filter, &shown)?;
    Ok(Finished {
        output,
        exit: Exit::Ok,
    })
}

/// The environment for `history`, which only reads files: a secret that only the service is
/// given (`LoadCredential=`) must not stop an admin from reading the history, so a secret
/// variable that is not set gets a stand-in (never used: `history` does not connect).
struct SecretsNotNeeded;

impl Env for SecretsNotNeeded {
    fn var_os(&self, name: &str) -> Option<std::ffi::OsString> {
        let secret = name.starts_with("PVESCALE_")
            && ["SECRET", "PASSWORD", "TOKEN"]
                .iter()
                .any(|word| name.contains(word));
        SystemEnv
            .var_os(name)
            .or_else(|| secret.then(|| "not-needed-to-read-the-history".into()))
    }

    fn is_root(&self) -> bool {
        SystemEnv.is_root()
    }

    fn user_config_dir(&self) -> Option<std::path::PathBuf> {
        SystemEnv.user_config_dir()
    }

    fn user_state_dir(&self) -> Option<std::path::PathBuf> {
        SystemEnv.user_state_dir()
    }
}
