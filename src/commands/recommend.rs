//! `pvescale recommend`: sizes per VM from the history Proxmox keeps (changes nothing).

use super::{Finished, load_config};
use crate::cli::{GlobalArgs, OutputFormat, RecommendArgs};
use crate::error::{Exit, Failure};
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
    if let Some(id) = args.vm
        && !report
            .clusters
            .iter()
            .any(|c| c.vms.iter().any(|v| v.vmid == id))
        && report.clusters.iter().any(|c| c.error.is_none())
    {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "VM {id} is not in any cluster (or is a template, or the token lacks VM.Audit on /vms/{id})"
        )));
    }
    let output = match args.output {
        OutputFormat::Json => to_json(&report)?,
        OutputFormat::Table => render(&report),
    };
    let exit = Exit::of_outcome(
        report.clusters.iter().map(|c| c.error.is_some()),
        report
            .clusters
            .iter()
            .flat_map(|c| c.vms.iter())
            .any(|v| v.error.is_some()),
    );
    Ok(Finished { output, exit })
}
