//! `pvescale simulate`: the history replayed through the policy `run` uses.

use super::{ClusterOutcome, Finished, history_exit, load_config};
use crate::cli::{GlobalArgs, SimulateArgs, SimulateFormat};
use crate::error::Failure;
use crate::report::to_json;
use crate::rrd_history::{self, Request};
use crate::simulate::{
    ASSUMPTIONS, ClusterBacktest, SimulateReport, backtest_vm, render, render_csv, render_svg,
};

/// `pvescale simulate`.
pub fn simulate(global: &GlobalArgs, args: &SimulateArgs) -> Result<Finished, Failure> {
    let config = load_config(global)?;
    let now = crate::clock::now();
    let since = args.since.as_secs();
    let req = Request {
        from: now.saturating_sub(since),
        to: now,
        with_max: false,
    };
    let timeline = args.vm.is_some();
    // `[[schedule]]` windows are replayed as `run` reads them: in the local zone.
    let zone = super::local_zone_or_utc();
    let clusters: Vec<ClusterBacktest> = config
        .clusters()
        .iter()
        .map(|cluster| {
            let read = rrd_history::read_cluster(&config, cluster, args.vm, req);
            for warning in &read.warnings {
                log::warn!("cluster {}: {warning}", read.name);
            }
            ClusterBacktest {
                vms: read
                    .vms
                    .iter()
                    .map(|(h, p)| {
                        let vm = &h.vm;
                        let windows = |t| {
                            config.windows_in_force(vm.vmid, &vm.tags, vm.pool.as_deref(), t, &zone)
                        };
                        backtest_vm(h, p, &windows, req, timeline)
                    })
                    .collect(),
                name: read.name,
                error: read.error,
                warnings: read.warnings,
            }
        })
        .collect();
    let report = SimulateReport {
        time: now,
        since_secs: since,
        assumptions: ASSUMPTIONS.iter().map(|a| a.to_string()).collect(),
        clusters,
    };
    let outcome: Vec<ClusterOutcome> = report
        .clusters
        .iter()
        .map(|c| ClusterOutcome {
            read: c.error.is_none(),
            vmids: c.vms.iter().map(|v| v.vmid).collect(),
            vm_failed: c.vms.iter().any(|v| v.error.is_some()),
        })
        .collect();
    let exit = history_exit(args.vm, &outcome)?;
    let output = match args.output {
        SimulateFormat::Json => to_json(&report)?,
        SimulateFormat::Table => render(&report),
        SimulateFormat::Csv => render_csv(&report),
        SimulateFormat::Svg => render_svg(&report, &zone),
    };
    for cluster in &report.clusters {
        if let Some(error) = &cluster.error {
            log::error!("cluster {}: {error}", cluster.name);
        }
    }
    Ok(Finished { output, exit })
}
