//! The `run` and `status` commands: config → lock → state → each cluster → state → report.

use std::path::Path;

use super::{Finished, load_config};
use crate::apply::ApplyTiming;
use crate::cli::{GlobalArgs, OutputFormat, RunArgs, StatusArgs};
use crate::config::{Config, SystemEnv};
use crate::engine::{self, Mode};
use crate::error::Failure;
use crate::pve::Client;
use crate::report::{self, ClusterReport, RunReport, UnsettledWrites};
use crate::state::{LockError, State, StateLock};

/// Name of the state file in the state directory.
pub const STATE_FILE: &str = "state.json";

/// `pvescale run [--dry-run]`.
pub fn run(global: &GlobalArgs, args: &RunArgs) -> Result<Finished, Failure> {
    let config = load_config(global)?;
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Apply
    };
    let report = pass(&config, mode, crate::clock::now())?;
    // Under systemd (stderr is the journal): a line per change, refusal or failure and one
    // summary line, with priorities, instead of a table.
    if mode == Mode::Apply
        && args.output == OutputFormat::Table
        && std::env::var_os("JOURNAL_STREAM").is_some()
    {
        crate::history::log_run(&report);
        return Ok(Finished {
            output: String::new(),
            exit: report.exit(),
        });
    }
    let text = match args.output {
        OutputFormat::Json => report::to_json(&report)?,
        OutputFormat::Table if global.quiet && report.is_quiet() => String::new(),
        OutputFormat::Table => {
            let mut text = report::render_run(&report);
            if let Some(sent) = &report.notifications {
                text.push_str(&crate::notify::render(sent, report.dry_run));
            }
            text
        }
    };
    Ok(Finished {
        output: text,
        exit: report.exit(),
    })
}

/// `pvescale status`.
pub fn status(global: &GlobalArgs, args: &StatusArgs) -> Result<Finished, Failure> {
    let config = load_config(global)?;
    let mode = if args.refresh {
        Mode::StatusRefresh
    } else {
        Mode::Status
    };
    let report = pass(&config, mode, crate::clock::now())?;
    let output = match args.output {
        OutputFormat::Json => report::to_json(&report)?,
        OutputFormat::Table if global.verbose > 0 => report::render_status_detailed(&report),
        OutputFormat::Table => report::render_status(&report),
    };
    Ok(Finished {
        output,
        exit: report.exit(),
    })
}

/// One pass over every cluster at time `now`. Only `Mode::Apply` takes the lock and saves
/// the state.
pub fn pass(config: &Config, mode: Mode, now: u64) -> Result<RunReport, Failure> {
    let started = std::time::Instant::now();
    let state_dir = config.resolved_state_dir(&SystemEnv);
    let state_path = state_dir.join(STATE_FILE);
    let _lock = if mode == Mode::Apply {
        Some(StateLock::acquire(&state_dir).map_err(|e| match e {
            LockError::Held { path } => Failure::Locked(path.display().to_string()),
            other => Failure::Runtime(anyhow::anyhow!(
                "{other} (set state_dir in the config, or run as a user that can write it)"
            )),
        })?)
    } else {
        None
    };
    let (mut state, warnings) = if mode == Mode::Apply {
        State::load(&state_path, now)
    } else {
        State::peek(&state_path)
    };
    for warning in warnings {
        log::warn!("{warning}");
    }
    let mut clusters = Vec::new();
    for cluster in config.clusters() {
        let mut checkpoint = |state: &State| state.save(&state_path);
        let report = match Client::new(cluster.target_ref()) {
            Ok(client) => engine::process_cluster(
                config,
                cluster,
                &client,
                &mut state,
                now,
                mode,
                ApplyTiming {
                    task_timeout: cluster.task_timeout(),
                    ..ApplyTiming::default()
                },
                &mut checkpoint,
            ),
            Err(e) => {
                let mut report = ClusterReport::new(cluster.name());
                report.error = Some(e.to_string());
                report
            }
        };
        if let Some(error) = &report.error {
            log::error!("cluster {}: {error}", cluster.name());
        }
        if let Some(standby) = &report.standby {
            log::info!("{standby}");
        }
        for warning in &report.warnings {
            log::warn!("cluster {}: {warning}", cluster.name());
        }
        log::debug!(
            "cluster {}: {} requests, {} bytes received, metrics from {}",
            cluster.name(),
            report.requests,
            report.bytes_received,
            report.metrics_source
        );
        clusters.push(report);
    }
    let report = RunReport::new(mode == Mode::DryRun, now, clusters);
    if report.all_standby() {
        // Another node acts for every cluster: this run writes nothing, no state either.
        return Ok(report);
    }
    let clusters = report.clusters;
    if mode.is_status() {
        remember_configs_read(&state, &state_dir, &state_path, now);
    }
    if mode == Mode::Apply {
        let pruned = state.prune(now);
        if pruned > 0 {
            log::info!("forgot {pruned} VMs not seen for 7 days");
        }
        save_state(&state, &state_path)?;
    }
    let mut report = RunReport::new(mode == Mode::DryRun, now, clusters);
    report.unsettled_writes = UnsettledWrites::from_times(&state.unsettled_write_times());
    if !mode.is_status()
        && let Some(sent) =
            crate::notify::after_run(config.notify(), &mut state.notifications, &report, now)
    {
        // A dry run sends nothing and writes no state; a real run keeps what it told.
        report.set_notifications(sent);
        if mode == Mode::Apply {
            save_state(&state, &state_path)?;
        }
    }
    if mode == Mode::Apply {
        // Still under the lock: this run's history lines and metrics file.
        crate::history::record(config, &state_dir, &report);
        crate::prometheus::record(config, &report, started.elapsed());
    }
    Ok(report)
}

/// `status` keeps the configs it read, so that the next `status` need not read them again:
/// only into a state file the runs already keep, only while no run holds the lock, and only
/// the configs (its decisions must not move the runs' hysteresis). Where it cannot (no
/// state yet, a run in progress, no right to write), the next `status` reads them again.
fn remember_configs_read(read: &State, state_dir: &Path, state_path: &Path, now: u64) {
    if !state_path.exists() {
        return;
    }
    let Ok(_lock) = StateLock::acquire(state_dir) else {
        log::debug!("status: the state is locked or not writable; configs read are not kept");
        return;
    };
    let (mut state, _) = State::peek(state_path);
    let adopted = state.adopt_known_configs(read, now);
    if adopted == 0 {
        return;
    }
    match state.save(state_path) {
        Ok(()) => log::debug!("status: kept what it read of {adopted} VMs' configs"),
        Err(e) => log::debug!("status: cannot keep the configs read: {e:#}"),
    }
}

fn save_state(state: &State, path: &Path) -> Result<(), Failure> {
    state.save(path).map_err(|e| {
        Failure::Runtime(e.context(format!("cannot write the state file {}", path.display())))
    })
}
