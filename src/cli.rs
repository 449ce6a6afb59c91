//! Command-line interface (clap types only).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  pvescale check                      is the config, the token and every VM ready?
  pvescale run --dry-run              what would be changed, and why (changes nothing)
  pvescale run                        scale every managed VM once (what the timer runs)
  pvescale status --output json       utilisation, readiness and next action per VM
  pvescale history --since 24h        what was changed, refused or failed in the last day

Files: /etc/pvescale/pvescale.toml (config), /var/lib/pvescale/state.json (state),
/var/lib/pvescale/history.jsonl (history). See pvescale(1) and pvescale.toml(5).
Exit codes: 0 ok, 1 error, 2 usage, 3 some VMs failed, 75 another run holds the lock,
78 config error.";

/// Live autoscaling of Proxmox VE VMs: vCPUs and memory follow the load, without reboots.
#[derive(Debug, Parser)]
#[command(name = "pvescale", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file [default: $PVESCALE_CONFIG, else /etc/pvescale/pvescale.toml as root,
    /// else ~/.config/pvescale/pvescale.toml]
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// More detail on stderr (repeat for more)
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Print nothing unless something changed or failed
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate and scale every managed VM once, then exit (run this from a timer)
    Run(RunArgs),
    /// Show every managed VM: size, utilisation, readiness, and what the next run would do
    Status(StatusArgs),
    /// Check config, connection, credentials, privileges and each VM's readiness
    Check(CheckArgs),
    /// Show what runs did: every change, refusal and failure, oldest first
    History(HistoryArgs),
    /// Recommend vCPUs and memory per VM from the history Proxmox keeps (changes nothing)
    Recommend(RecommendArgs),
    /// Replay the history through the scaling policy: what pvescale would have done
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read and decide, print the plan with reasons; change nothing and write no state
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Output format of the summary
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Read every running VM's config and pending changes, not only those whose config
    /// earlier runs have not learned recently (more requests, the whole truth)
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only send a test message on every notification channel ([notify]) and report each
    /// result; checks nothing else
    #[arg(long)]
    pub notify_test: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this VM
    #[arg(long, value_name = "VMID")]
    pub vm: Option<u32>,

    /// Only this cluster (its name in the config)
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// Only entries from this long ago until now, e.g. 30m, 24h, 7d
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,

    /// Output format (svg: a chart of the sizes set for the VM given with --vm)
    #[arg(long, short = 'o', value_enum, default_value_t = HistoryFormat::Table,
          requires_if("svg", "vm"))]
    pub output: HistoryFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    Table,
    Json,
    /// A chart (one self-contained SVG file)
    Svg,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// How much history to use, e.g. 36h, 7d (Proxmox keeps about a week)
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_window)]
    pub since: std::time::Duration,

    /// Only this VM (managed or not)
    #[arg(long, value_name = "VMID")]
    pub vm: Option<u32>,

    /// CPU headroom on top of the 95th percentile of busy cores, in percent
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0, value_parser = parse_percent)]
    pub cpu_margin: f64,

    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// How much history to replay, e.g. 36h, 7d (Proxmox keeps about a week)
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_window)]
    pub since: std::time::Duration,

    /// Only this VM (managed or not), with its minute-by-minute timeline
    #[arg(long, value_name = "VMID")]
    pub vm: Option<u32>,

    /// Output format (csv, svg: the timeline of the VM given with --vm, as a table or a chart)
    #[arg(long, short = 'o', value_enum, default_value_t = SimulateFormat::Table,
          requires_if("csv", "vm"), requires_if("svg", "vm"))]
    pub output: SimulateFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimulateFormat {
    Table,
    Json,
    Csv,
    /// A chart (one self-contained SVG file)
    Svg,
}

/// A history window: a duration of at least a minute.
fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::units::parse_duration(s).map_err(|e| e.to_string())?;
    if d.as_secs() < 60 {
        return Err(format!("{s:?} is shorter than a minute"));
    }
    Ok(d)
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentage between 0 and 1000")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["pvescale", "run", "--dry-run", "--config", "/x.toml", "-v"])
                .expect("parses");
        assert_eq!(cli.global.config, Some(PathBuf::from("/x.toml")));
        assert_eq!(cli.global.verbose, 1);
        assert!(matches!(
            cli.command,
            Command::Run(RunArgs { dry_run: true, .. })
        ));
    }
}
