//! The integration tests, one binary: the real `pvescale` binary and library against the
//! simulated Proxmox VE cluster (`tests/pvesim/`) over HTTPS, property tests, and checks of the
//! shipped files. `common` is the shared test environment.

mod common;

mod api_health;
mod charts;
mod client;
mod config_examples;
mod containers;
mod crash;
mod faults_matrix;
mod guests;
mod hardening;
mod input_props;
mod leader;
mod metrics_sources;
mod notify;
mod ops;
mod policy_props;
mod proxy;
mod recommend;
mod request_counts;
mod run_e2e;
mod run_faults;
mod run_ops;
mod schedule;
mod schema_check;
mod secrets;
mod tls_refusals;
