//! The scaling decision: a pure function of policy, VM facts, utilisation, state and time.
//!
//! The parameter types below are shared with `config.rs` (which fills them from TOML);
//! their field names and meanings are a contract.

use std::time::Duration;

/// Which resource a rule or decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Cpu,
    Memory,
}

/// Tunables of one resource. Sizes are vCPUs for CPU and MiB for memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePolicy {
    /// Manage this resource at all.
    pub enabled: bool,
    /// Allow growing.
    pub scale_up: bool,
    /// Allow shrinking.
    pub scale_down: bool,
    /// Utilisation (percent, 0-100) above which the resource is short.
    pub high: f64,
    /// Utilisation (percent) below which the resource is wasted. Always `< high`.
    pub low: f64,
    /// Utilisation (percent) to size toward; `None` = middle of `low..high`.
    pub target: Option<f64>,
    /// Smallest size pvescale will set (vCPUs or MiB).
    pub min: u64,
    /// Largest size pvescale will set (vCPUs or MiB).
    pub max: u64,
    /// Utilisation must stay above `high` this long before growing.
    pub up_after: Duration,
    /// Utilisation must stay below `low` this long before shrinking.
    pub down_after: Duration,
    /// No growth within this time after any change of this resource.
    pub cooldown_up: Duration,
    /// No shrink within this time after any change of this resource.
    pub cooldown_down: Duration,
    /// Largest single growth (vCPUs or MiB).
    pub max_step_up: u64,
    /// Largest single shrink (vCPUs or MiB).
    pub max_step_down: u64,
}

/// Guard on the VM's own node, applied to scale-ups only.
#[derive(Debug, Clone, PartialEq)]
pub struct HostGuard {
    /// Block a memory scale-up that would take the node's used memory above this percent.
    pub max_memory: f64,
    /// Block any scale-up while the node's CPU is above this percent.
    pub max_cpu: f64,
}

/// The effective policy of one VM (defaults, then `[policy]`, then matching overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Length of the utilisation window averaged per run.
    pub window: Duration,
    /// Fewest samples in the window for the figure to count as known.
    pub min_samples: u32,
    pub cpu: ResourcePolicy,
    pub memory: ResourcePolicy,
    /// Memory never shrinks below what is in use plus this percent.
    pub memory_margin: f64,
    /// After a VM refused a change: no new attempt in that direction for this long.
    pub backoff: Duration,
    pub host: HostGuard,
}

const MIB_PER_GIB: u64 = 1024;

impl Default for Policy {
    fn default() -> Self {
        let minute = |m: u64| Duration::from_secs(m * 60);
        Policy {
            window: minute(5),
            min_samples: 3,
            cpu: ResourcePolicy {
                enabled: true,
                scale_up: true,
                scale_down: true,
                high: 80.0,
                low: 25.0,
                target: None,
                min: 1,
                max: 8,
                up_after: minute(2),
                down_after: minute(15),
                cooldown_up: minute(3),
                cooldown_down: minute(15),
                max_step_up: 2,
                max_step_down: 1,
            },
            memory: ResourcePolicy {
                enabled: true,
                scale_up: true,
                scale_down: true,
                high: 85.0,
                low: 40.0,
                target: None,
                min: MIB_PER_GIB,
                max: 16 * MIB_PER_GIB,
                up_after: minute(1),
                down_after: minute(30),
                cooldown_up: minute(3),
                cooldown_down: minute(30),
                max_step_up: 4 * MIB_PER_GIB,
                max_step_down: MIB_PER_GIB,
            },
            memory_margin: 15.0,
            backoff: minute(60),
            host: HostGuard {
                max_memory: 90.0,
                max_cpu: 90.0,
            },
        }
    }
}
