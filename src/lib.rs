//! pvescale: live autoscaling of Proxmox VE VMs. The binary in `main.rs` is a thin shell
//! around this library.

pub mod apply;
pub mod atomic_file;
pub mod chart;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod dimm;
pub mod engine;
pub mod error;
pub mod fs_guard;
pub mod guest;
pub mod history;
pub mod leader;
pub mod logging;
pub mod memory_source;
pub mod metrics;
pub mod notify;
pub mod onlining;
pub mod policy;
pub mod prometheus;
pub mod proxy;
pub mod pve;
pub mod recommend;
pub mod record;
pub mod report;
pub mod rrd_history;
pub mod schedule;
pub mod secret;
pub mod server_text;
pub mod simulate;
pub mod state;
pub mod tls;
pub mod units;
