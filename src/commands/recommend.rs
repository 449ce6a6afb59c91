//! `pvescale recommend`: sizes per VM from the history Proxmox keeps (changes nothing).

use super::{ClusterOutcome, Finished, history_exit, load_config};
use crate::cli::{GlobalArgs, OutputFormat, RecommendArgs};
use crate::error::Failure;
use crate::recommend::{
    CPU_QUANTILE, ClusterRecommendations, RecommendReport, cluster_recommendations, render,
};
use crate::report::to_json;
use crate::rrd_history::{self, Request};

/// `pvescale recommend`.
pub fn recommend(global: &GlobalArgs, args: &RecommendArgs) -> Result<Finished, Failure> {
    let config = load_config(global)?;
    let now = crate::clock::now();
    let since = args.since.as_secs();
    let req = Request {
        from: now.saturating_sub(since),
        to: now,
        with_max: true,
    };
    let clusters: Vec<ClusterRecommendations> = config
        .clusters()
        .iter()
        .map(|cluster| {
            let read = rrd_history::read_cluster(&config, cluster, args.vm, req);
            for warning in &read.warnings {
                log::warn!("cluster {}: {warning}", read.name);
            }
            cluster_recommendations(read, since, args.cpu_margin)
        })
        .collect();
    let report = RecommendReport {
        time: now,
        since_secs: since,
        cpu_quantile: CPU_QUANTILE,
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
        OutputFormat::Json => to_json(&report)?,
        OutputFormat::Table => render(&report),
    };
    Ok(Finished { output, exit })
}
