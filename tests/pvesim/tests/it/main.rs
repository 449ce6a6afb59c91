//! The simulator's own tests, one binary: each behaviour it imitates, checked over HTTPS the
//! way a client sees it. `common` is a minimal HTTPS client.

mod common;

mod agent;
mod api;
mod faults;
mod metrics;
mod writes;
