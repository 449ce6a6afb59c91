//! The cluster model: versions, nodes, guests, privileges and load patterns.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// A Proxmox VE version: the release (`major.minor`, e.g. `8.0`, `8.4`, `9.1`) and the
/// pve-manager patch level (`8.2.5`), which `/version` reports as `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// A release at the patch level the simulator assumes for it (see [`Version::parse`]).
    pub const fn new(major: u32, minor: u32) -> Self {
        Version {
            major,
            minor,
            patch: default_patch(major, minor),
        }
    }

    /// Parses `"8.4"` (at a patch level typical of that release) or `"8.2.5"`; anything
    /// unparsable falls back to 8.4.
    pub fn parse(s: &str) -> Self {
        let mut it = s.trim().split('.');
        let major = it.next().and_then(|m| m.parse().ok());
        let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        let patch = it.next().and_then(|p| p.parse().ok());
        match major {
            Some(major) => Version {
                major,
                minor,
                patch: patch.unwrap_or(default_patch(major, minor)),
            },
            None => Version::new(8, 4),
        }
    }

    /// At least this release, whatever the patch level.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// `config` returns `memory` as a JSON integer on 8.0, a string since 8.1.
    pub fn memory_is_string(&self) -> bool {
        self.at_least(8, 1)
    }

    /// `/cluster/metrics/export` exists since pve-manager 8.2.5 (debian/changelog: "api:
    /// metrics: add /cluster/metrics/export endpoint").
    pub fn has_metrics_export(&self) -> bool {
        (self.major, self.minor, self.patch) >= (8, 2, 5)
    }

    /// Error bodies carry `message` only on servers since early 2025 (8.4, 9.x).
    pub fn has_error_message(&self) -> bool {
        self.at_least(8, 4)
    }

    /// PVE 9 RRD layout and extra fields (`memhost`, `pressure*`).
    pub fn is_pve9(&self) -> bool {
        self.major >= 9
    }

    /// What `/version` reports as `version` (pve-manager's upstream version, `8.2.5`).
    pub(crate) fn full_version(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The patch level a bare release (`"8.2"`) stands for.
const fn default_patch(major: u32, minor: u32) -> u32 {
    match (major, minor) {
        (8, 0) => 4,
        (8, 1) => 4,
        (8, 2) => 7,
        (8, 3) => 5,
        (8, 4) => 1,
        (9, 0) => 6,
        (9, 1) => 2,
        _ => 0,
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Demand over simulated time. Times (`at`, `start`, `end`, ...) are seconds relative to the
/// simulation's start epoch ([`crate::Sim::start_time`]); negative values are in the past.
///
/// For CPU the value is the number of busy cores the guest wants; for memory it is MiB the
/// guest wants. What is reported is limited by the VM's size at that time.
#[derive(Clone, Debug, PartialEq)]
pub enum Pattern {
    Constant(f64),
    /// `before` until `at`, `after` from `at` on.
    Step {
        before: f64,
        after: f64,
        at: i64,
    },
    /// `from` until `start`, linear to `to` at `end`, `to` afterwards.
    Ramp {
        from: f64,
        to: f64,
        start: i64,
        end: i64,
    },
    /// `base + amplitude * sin(2π t / period)` (e.g. a daily cycle with period 86400).
    Periodic {
        base: f64,
        amplitude: f64,
        period: i64,
    },
    /// `peak` during the first `duration` seconds of every `every` seconds, `base` otherwise.
    Spikes {
        base: f64,
        peak: f64,
        every: i64,
        duration: i64,
    },
    /// `values[i]` from `start + i*step`; the first value before, the last one after.
    Series {
        start: i64,
        step: i64,
        values: Vec<f64>,
    },
}

impl Pattern {
    /// Value at `rel` seconds after the simulation start (never negative).
    pub fn at(&self, rel: i64) -> f64 {
        let v = match self {
            Pattern::Constant(v) => *v,
            Pattern::Step { before, after, at } => {
                if rel < *at {
                    *before
                } else {
                    *after
                }
            }
            Pattern::Ramp {
                from,
                to,
                start,
                end,
            } => {
                if rel <= *start {
                    *from
                } else if rel >= *end || end <= start {
                    *to
                } else {
                    let f = (rel - start) as f64 / (end - start) as f64;
                    from + (to - from) * f
                }
            }
            Pattern::Periodic {
                base,
                amplitude,
                period,
            } => {
                if *period <= 0 {
                    *base
                } else {
                    let phase = rel.rem_euclid(*period) as f64 / *period as f64;
                    base + amplitude * (phase * std::f64::consts::TAU).sin()
                }
            }
            Pattern::Spikes {
                base,
                peak,
                every,
                duration,
            } => {
                if *every > 0 && rel.rem_euclid(*every) < *duration {
                    *peak
                } else {
                    *base
                }
            }
            Pattern::Series {
                start,
                step,
                values,
            } => {
                if values.is_empty() {
                    0.0
                } else if rel < *start || *step <= 0 {
                    values[0]
                } else {
                    let i = ((rel - start) / step) as usize;
                    values[i.min(values.len() - 1)]
                }
            }
        };
        if v.is_finite() { v.max(0.0) } else { 0.0 }
    }
}

/// Run state of a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmStatus {
    Running,
    Stopped,
    /// Running but paused (`qmpstatus: paused`); `cluster/resources` says `paused`.
    Paused,
    /// No data yet (e.g. right after a node restart): `status: unknown`, no metrics.
    Unknown,
}

impl VmStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            VmStatus::Running => "running",
            VmStatus::Stopped => "stopped",
            VmStatus::Paused => "paused",
            VmStatus::Unknown => "unknown",
        }
    }

    /// The QEMU process exists (running or paused): config changes go through hotplug.
    pub fn is_live(&self) -> bool {
        matches!(self, VmStatus::Running | VmStatus::Paused)
    }
}

/// Guest type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Qemu,
    Lxc,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Qemu => "qemu",
            Kind::Lxc => "lxc",
        }
    }
}

/// Every privilege name the simulator knows.
pub const ALL_PRIVS: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.Monitor",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// Privileges of a token or user: a set on `/` (propagated to everything) plus optional sets on
/// sub-paths such as `/vms/101`, `/vms`, `/nodes/pve1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Privs {
    root: BTreeSet<String>,
    paths: BTreeMap<String, BTreeSet<String>>,
    /// Grants with `propagate=0`: valid on exactly that path, not below it.
    exact: BTreeMap<String, BTreeSet<String>>,
}

impl Privs {
    /// No privilege at all.
    pub fn none() -> Self {
        Privs::default()
    }

    /// These privileges on `/`.
    pub fn new(privs: &[&str]) -> Self {
        Privs {
            root: privs.iter().map(|p| p.to_string()).collect(),
            paths: BTreeMap::new(),
            exact: BTreeMap::new(),
        }
    }

    /// What pvescale needs: `VM.Audit`, `VM.Config.CPU`, `VM.Config.Memory`, `Sys.Audit` on `/`.
    pub fn pvescale() -> Self {
        Privs::new(&["VM.Audit", "VM.Config.CPU", "VM.Config.Memory", "Sys.Audit"])
    }

    /// Read-only: `VM.Audit` and `Sys.Audit` on `/`.
    pub fn audit() -> Self {
        Privs::new(&["VM.Audit", "Sys.Audit"])
    }

    /// Every privilege (like `Administrator` on `/`).
    pub fn all() -> Self {
        Privs::new(ALL_PRIVS)
    }

    /// Adds a privilege on `/`.
    pub fn with(mut self, privilege: &str) -> Self {
        self.root.insert(privilege.to_string());
        self
    }

    /// Removes a privilege from `/`.
    pub fn without(mut self, privilege: &str) -> Self {
        self.root.remove(privilege);
        self
    }

    /// Adds privileges on a sub-path (e.g. `"/vms/101"`).
    pub fn on(mut self, path: &str, privs: &[&str]) -> Self {
        let path = normalize_acl_path(path);
        self.paths
            .entry(path)
            .or_default()
            .extend(privs.iter().map(|p| p.to_string()));
        self
    }

    /// Adds privileges on one path without propagation (`pveum acl modify PATH
    /// --propagate 0`): they hold on `path` itself, not below it.
    pub fn on_exact(mut self, path: &str, privs: &[&str]) -> Self {
        let path = normalize_acl_path(path);
        self.exact
            .entry(path)
            .or_default()
            .extend(privs.iter().map(|p| p.to_string()));
        self
    }

    /// Effective privileges on `path` with their propagate flag, as pve-access-control's
    /// `get_effective_permissions` reports them: the root set and every set on a prefix of
    /// `path` propagate; a grant without propagation holds on its own path only (flag 0).
    pub fn effective_flags(&self, path: &str) -> BTreeMap<String, bool> {
        let path = normalize_acl_path(path);
        let mut out: BTreeMap<String, bool> = self.root.iter().map(|p| (p.clone(), true)).collect();
        for (p, set) in &self.paths {
            if p == &path || path.starts_with(&format!("{p}/")) || p == "/" {
                for privilege in set {
                    out.insert(privilege.clone(), true);
                }
            }
        }
        if let Some(set) = self.exact.get(&path) {
            for privilege in set {
                out.entry(privilege.clone()).or_insert(false);
            }
        }
        out
    }

    /// Effective privileges on `path`.
    pub fn effective(&self, path: &str) -> BTreeSet<String> {
        self.effective_flags(path).into_keys().collect()
    }

    pub fn has(&self, path: &str, privilege: &str) -> bool {
        self.effective_flags(path).contains_key(privilege)
    }

    /// Paths with an explicit ACL (always includes `/`).
    pub fn acl_paths(&self) -> Vec<String> {
        let mut v = vec!["/".to_string()];
        for p in self.paths.keys().chain(self.exact.keys()) {
            if !v.contains(p) {
                v.push(p.clone());
            }
        }
        v
    }
}

fn normalize_acl_path(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".to_string()
    } else if t.starts_with('/') {
        t.to_string()
    } else {
        format!("/{t}")
    }
}

/// A cluster node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub(crate) name: String,
    pub(crate) cpus: u32,
    pub(crate) memory_mib: u64,
    pub(crate) online: bool,
    pub(crate) phys_bits: u32,
    pub(crate) export_unreachable: bool,
}

impl NodeSpec {
    /// A node with 16 CPUs and 64 GiB of memory.
    pub fn new(name: &str) -> Self {
        NodeSpec {
            name: name.to_string(),
            cpus: 16,
            memory_mib: 65536,
            online: true,
            phys_bits: 46,
            export_unreachable: false,
        }
    }
    /// The host CPU's physical address bits (default 46, a common server CPU); with
    /// memory hotplug they bound a VM's memory (qemu-server Memory.pm `get_max_mem`).
    pub fn phys_bits(mut self, bits: u32) -> Self {
        self.phys_bits = bits.clamp(32, 52);
        self
    }
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n.max(1);
        self
    }
    pub fn memory_mib(mut self, m: u64) -> Self {
        self.memory_mib = m.max(1024);
        self
    }
    /// An offline node: its guests are `unknown`, requests proxied to it fail with 595.
    pub fn online(mut self, online: bool) -> Self {
        self.online = online;
        self
    }
    /// Online, but `metrics/export` cannot get its metrics (see [`Node::export_unreachable`]).
    pub fn export_unreachable(mut self, unreachable: bool) -> Self {
        self.export_unreachable = unreachable;
        self
    }
}

/// State of a node (see [`crate::Sim::update_node`]).
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub online: bool,
    /// `metrics/export` asks the other nodes for their metrics one after another and skips,
    /// without an error, any that fails, times out or runs pve-manager older than 8.2.5: this
    /// node's metrics and its guests' are then missing from the answer. Never applies to the
    /// node answering the API (the first), which reads its own.
    pub export_unreachable: bool,
    /// Host CPU load not caused by guests, in busy cores.
    pub base_cpu: f64,
    /// Host memory used by the host itself, MiB.
    pub base_mem_mib: u64,
    /// Physical address bits of the host CPU.
    pub phys_bits: u32,
}

impl From<&NodeSpec> for Node {
    fn from(spec: &NodeSpec) -> Node {
        Node {
            name: spec.name.clone(),
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            online: spec.online,
            base_cpu: 0.2,
            base_mem_mib: 3072,
            phys_bits: spec.phys_bits,
            export_unreachable: spec.export_unreachable,
        }
    }
}

/// A guest to create.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub(crate) vmid: u32,
    pub(crate) node: String,
    pub(crate) kind: Kind,
    pub(crate) name: Option<String>,
    pub(crate) sockets: u32,
    pub(crate) cores: u32,
    pub(crate) vcpus: Option<u32>,
    pub(crate) memory_mib: u64,
    pub(crate) balloon_mib: Option<u64>,
    pub(crate) numa: bool,
    pub(crate) hotplug: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) pool: Option<String>,
    pub(crate) hastate: Option<String>,
    pub(crate) status: VmStatus,
    pub(crate) lock: Option<String>,
    pub(crate) template: bool,
    pub(crate) cpulimit: Option<f64>,
    pub(crate) cpu_load: Option<Pattern>,
    pub(crate) mem_load: Option<Pattern>,
    pub(crate) balloon_stats: bool,
    pub(crate) refuse_cpu_unplug: Option<u32>,
    pub(crate) refuse_mem_unplug: Option<u32>,
    pub(crate) io_overhead: f64,
    pub(crate) metrics_gap: Option<(i64, i64)>,
    pub(crate) agent: bool,
    pub(crate) agent_running: bool,
    pub(crate) ostype: Option<String>,
    pub(crate) onlines_cpu: bool,
    pub(crate) onlines_mem: bool,
    pub(crate) extra: Vec<(String, String)>,
    pub(crate) created_ago: i64,
    pub(crate) booted_ago: i64,
}

impl VmSpec {
    /// A running QEMU VM: 1 socket × 2 cores, 2048 MiB, balloon device on (no `balloon` key),
    /// default hotplug (`network,disk,usb`), numa 0, load 0.5 cores / half its memory,
    /// balloon statistics reported, created 30 days and booted 5 days before the start.
    pub fn new(vmid: u32, node: &str) -> Self {
        VmSpec {
            vmid,
            node: node.to_string(),
            kind: Kind::Qemu,
            name: None,
            sockets: 1,
            cores: 2,
            vcpus: None,
            memory_mib: 2048,
            balloon_mib: None,
            numa: false,
            hotplug: None,
            tags: Vec::new(),
            pool: None,
            hastate: None,
            status: VmStatus::Running,
            lock: None,
            template: false,
            cpulimit: None,
            cpu_load: None,
            mem_load: None,
            balloon_stats: true,
            refuse_cpu_unplug: None,
            refuse_mem_unplug: None,
            io_overhead: 0.0,
            metrics_gap: None,
            agent: false,
            agent_running: true,
            ostype: None,
            onlines_cpu: true,
            onlines_mem: true,
            extra: Vec::new(),
            created_ago: 30 * 86400,
            booted_ago: 5 * 86400,
        }
    }
    /// An LXC container (listed in `cluster/resources` and `metrics/export`; no qemu endpoints).
    pub fn lxc(mut self) -> Self {
        self.kind = Kind::Lxc;
        self
    }
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    pub fn sockets(mut self, n: u32) -> Self {
        self.sockets = n.max(1);
        self
    }
    pub fn cores(mut self, n: u32) -> Self {
        self.cores = n.max(1);
        self
    }
    /// Sets the `vcpus` key (absent = sockets × cores).
    pub fn vcpus(mut self, n: u32) -> Self {
        self.vcpus = Some(n.max(1));
        self
    }
    pub fn memory_mib(mut self, m: u64) -> Self {
        self.memory_mib = m;
        self
    }
    /// Sets the `balloon` key (0 = no balloon device).
    pub fn balloon_mib(mut self, m: u64) -> Self {
        self.balloon_mib = Some(m);
        self
    }
    pub fn numa(mut self, on: bool) -> Self {
        self.numa = on;
        self
    }
    /// Sets the `hotplug` key, e.g. `"network,disk,usb,cpu,memory"`.
    pub fn hotplug(mut self, features: &str) -> Self {
        self.hotplug = Some(features.to_string());
        self
    }
    /// Shortcut: `hotplug: network,disk,usb,cpu,memory` and `numa: 1` (live scaling possible).
    pub fn live_scalable(self) -> Self {
        self.hotplug("network,disk,usb,cpu,memory").numa(true)
    }
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }
    pub fn pool(mut self, pool: &str) -> Self {
        self.pool = Some(pool.to_string());
        self
    }
    pub fn hastate(mut self, state: &str) -> Self {
        self.hastate = Some(state.to_string());
        self
    }
    pub fn running(mut self, running: bool) -> Self {
        self.status = if running {
            VmStatus::Running
        } else {
            VmStatus::Stopped
        };
        self
    }
    pub fn status(mut self, status: VmStatus) -> Self {
        self.status = status;
        self
    }
    pub fn lock(mut self, lock: &str) -> Self {
        self.lock = Some(lock.to_string());
        self
    }
    /// A template (stopped, `template: 1`).
    pub fn template(mut self, on: bool) -> Self {
        self.template = on;
        if on {
            self.status = VmStatus::Stopped;
        }
        self
    }
    pub fn cpulimit(mut self, limit: f64) -> Self {
        self.cpulimit = Some(limit);
        self
    }
    /// CPU time of QEMU's I/O threads and vhost workers, as a fraction of the busy vCPU
    /// time (0.15 = 15 % on top). Proxmox counts the whole QEMU process against the vCPUs
    /// (qemu-server `vmstatus`), so a saturated VM doing I/O reads above 1.
    pub fn io_overhead(mut self, fraction: f64) -> Self {
        self.io_overhead = fraction.max(0.0);
        self
    }
    /// No stats for this guest from `from` to `to` (seconds after the simulation start): the
    /// guest runs, but pvestatd gets nothing from it (a QMP timeout, a hung agent). Its
    /// `cluster/resources` row has no `cpu`/`mem`, the export no `cpu_current`/`mem_used`,
    /// rrddata no `cpu`/`mem` for those minutes (pve-manager PVE/Service/pvestatd.pm
    /// `update_qemu_status` skips what `vmstatus` could not read).
    pub fn metrics_gap(mut self, from: i64, to: i64) -> Self {
        self.metrics_gap = Some((from, to));
        self
    }
    /// CPU demand in busy cores over time.
    pub fn cpu_load(mut self, p: Pattern) -> Self {
        self.cpu_load = Some(p);
        self
    }
    /// Memory demand in MiB over time.
    pub fn mem_load(mut self, p: Pattern) -> Self {
        self.mem_load = Some(p);
        self
    }
    /// Whether the guest reports balloon statistics (then `mem` is what the guest uses;
    /// otherwise a host-side estimate near the allocated size).
    pub fn balloon_stats(mut self, on: bool) -> Self {
        self.balloon_stats = on;
        self
    }
    /// The guest lets `allowed` vCPUs go, then refuses to unplug more (the task fails).
    pub fn refuse_cpu_unplug(mut self, allowed: u32) -> Self {
        self.refuse_cpu_unplug = Some(allowed);
        self
    }
    /// The guest lets `allowed_dimms` DIMMs go, then refuses (`error unplug memory module`).
    pub fn refuse_mem_unplug(mut self, allowed_dimms: u32) -> Self {
        self.refuse_mem_unplug = Some(allowed_dimms);
        self
    }
    /// Sets the `agent` config key to `1` (`true`) or leaves it out (`false`, the default):
    /// whether a QEMU guest agent is configured. Other forms (`enabled=1,fstrim_cloned_disks=1`,
    /// `type=virtio`, `0`) go through [`VmSpec::config`].
    pub fn agent(mut self, enabled: bool) -> Self {
        self.agent = enabled;
        self
    }
    /// Whether the guest agent answers (default true). `false`: configured, but the agent in
    /// the guest is not running, so the agent endpoints fail with `QEMU guest agent is not
    /// running`.
    pub fn agent_running(mut self, running: bool) -> Self {
        self.agent_running = running;
        self
    }
    /// Sets the `ostype` key (default `l26`). A Windows type (`win*`, `w2k`, `w2k3`, `w2k8`,
    /// `wxp`, `wvista`) takes hot-added vCPUs and DIMMs but refuses every unplug, as if
    /// [`VmSpec::refuse_cpu_unplug`]`(0)` and [`VmSpec::refuse_mem_unplug`]`(0)` were set.
    pub fn ostype(mut self, ostype: &str) -> Self {
        self.ostype = Some(ostype.to_string());
        self
    }
    /// Whether the guest brings hot-added vCPUs (`cpu`) and DIMMs (`memory`) online (default
    /// both). A guest that does not keeps using what it booted with: it has the new vCPUs and
    /// memory, but they stay offline until it reboots.
    pub fn onlines(mut self, cpu: bool, memory: bool) -> Self {
        self.onlines_cpu = cpu;
        self.onlines_mem = memory;
        self
    }
    /// Any other config key, stored verbatim (e.g. `("cpu", "host")`, `("memory", "current=4096")`).
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_string(), value.to_string()));
        self
    }
    /// How long before the simulation start the VM was created (no data before).
    pub fn created_ago(mut self, d: Duration) -> Self {
        self.created_ago = d.as_secs() as i64;
        self
    }
    /// How long before the simulation start the VM was booted (uptime; stopped before that).
    pub fn booted_ago(mut self, d: Duration) -> Self {
        self.booted_ago = d.as_secs() as i64;
        self
    }
}

/// One period of constant size and state, from `from` (simulated unix time) on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Epoch {
    pub from: i64,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub status: VmStatus,
    pub booted: i64,
    pub cpulimit: f64,
    /// vCPUs the guest has brought online (≤ `vcpus`).
    pub online_vcpus: u32,
    /// Memory the guest has brought online, MiB (≤ `mem_mib`).
    pub online_mem_mib: u64,
}

/// Internal guest state.
#[derive(Clone, Debug)]
pub(crate) struct Vm {
    pub vmid: u32,
    pub kind: Kind,
    pub node: String,
    pub status: VmStatus,
    /// Current (running) config, raw strings; includes `name`, `tags`, `lock`, `template`.
    pub conf: BTreeMap<String, String>,
    pub pending: BTreeMap<String, String>,
    pub pending_delete: BTreeSet<String>,
    pub pool: Option<String>,
    pub hastate: Option<String>,
    pub cpu_load: Pattern,
    pub mem_load: Pattern,
    pub balloon_stats: bool,
    pub refuse_cpu_unplug: Option<u32>,
    pub refuse_mem_unplug: Option<u32>,
    /// See [`VmSpec::io_overhead`].
    pub io_overhead: f64,
    /// See [`VmSpec::metrics_gap`].
    pub metrics_gap: Option<(i64, i64)>,
    /// See [`VmSpec::agent_running`].
    pub agent_running: bool,
    /// See [`VmSpec::onlines`].
    pub onlines_cpu: bool,
    pub onlines_mem: bool,
    /// vCPUs and memory (MiB) the guest booted with (all online from boot).
    pub boot_vcpus: u32,
    pub boot_mem_mib: u64,
    /// vCPUs and memory (MiB) the guest has online now.
    pub online_vcpus: u32,
    pub online_mem_mib: u64,
    pub created_at: i64,
    pub history: Vec<Epoch>,
    pub status_reads: u64,
    pub digest: String,
    pub maxdisk: u64,
    /// Times a container's memory was set below its use (the kernel OOM-kills inside).
    pub oom_kills: u32,
}

pub(crate) fn parse_memory(v: &str) -> Option<u64> {
    for part in v.split(',') {
        let p = part.trim();
        let num = p.strip_prefix("current=").unwrap_or(p);
        if p.contains('=') && !p.starts_with("current=") {
            continue;
        }
        if let Ok(n) = num.parse::<u64>() {
            return Some(n);
        }
    }
    None
}

/// Hotplug feature set of a `hotplug` value (`None` = default `network,disk,usb`).
pub(crate) fn hotplug_features(v: Option<&str>) -> BTreeSet<String> {
    let v = v.unwrap_or("network,disk,usb");
    match v.trim() {
        "0" => BTreeSet::new(),
        "1" => ["network", "disk", "usb"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        // qemu-server parse_hotplug_features with pve-common split_list: `,`, `;`, spaces.
        other => other
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    }
}

impl Vm {
    pub fn from_spec(spec: &VmSpec, start: i64) -> Vm {
        let mut conf = BTreeMap::new();
        let vmid = spec.vmid;
        if spec.kind == Kind::Qemu {
            conf.insert("boot".into(), "order=scsi0;net0".into());
            conf.insert("cores".into(), spec.cores.to_string());
            conf.insert("cpu".into(), "x86-64-v2-AES".into());
            conf.insert("memory".into(), spec.memory_mib.to_string());
            conf.insert(
                "meta".into(),
                format!(
                    "creation-qemu=9.0.2,ctime={}",
                    start - spec.created_ago.max(0)
                ),
            );
            conf.insert(
                "net0".into(),
                format!(
                    "virtio=BC:24:11:{:02X}:{:02X}:{:02X},bridge=vmbr0,firewall=1",
                    (vmid >> 16) & 0xff,
                    (vmid >> 8) & 0xff,
                    vmid & 0xff
                ),
            );
            conf.insert("ostype".into(), "l26".into());
            conf.insert(
                "scsi0".into(),
                format!("local-lvm:vm-{vmid}-disk-0,iothread=1,size=32G"),
            );
            conf.insert("scsihw".into(), "virtio-scsi-single".into());
            conf.insert(
                "smbios1".into(),
                format!(
                    "uuid=5e1f0c2a-{:04x}-4d6e-9a1b-{:012x}",
                    vmid & 0xffff,
                    vmid
                ),
            );
            conf.insert("sockets".into(), spec.sockets.to_string());
            conf.insert(
                "vmgenid".into(),
                format!("0b6e2c4d-{:04x}-4f1a-8c3e-{:012x}", vmid & 0xffff, vmid),
            );
            if let Some(v) = spec.vcpus {
                conf.insert("vcpus".into(), v.to_string());
            }
            if let Some(b) = spec.balloon_mib {
                conf.insert("balloon".into(), b.to_string());
            }
            if spec.numa {
                conf.insert("numa".into(), "1".into());
            }
            if let Some(h) = &spec.hotplug {
                conf.insert("hotplug".into(), h.clone());
            }
            if spec.template {
                conf.insert("template".into(), "1".into());
            }
        } else {
            conf.insert("arch".into(), "amd64".into());
            conf.insert("cores".into(), spec.cores.to_string());
            conf.insert("memory".into(), spec.memory_mib.to_string());
            conf.insert("ostype".into(), "debian".into());
            conf.insert(
                "rootfs".into(),
                format!("local-lvm:vm-{vmid}-disk-0,size=8G"),
            );
        }
        conf.insert(
            "name".into(),
            spec.name.clone().unwrap_or_else(|| format!("vm{vmid}")),
        );
        if !spec.tags.is_empty() {
            conf.insert("tags".into(), spec.tags.join(";"));
        }
        if let Some(l) = &spec.lock {
            conf.insert("lock".into(), l.clone());
        }
        if let Some(c) = spec.cpulimit {
            conf.insert("cpulimit".into(), fmt_num(c));
        }
        if spec.kind == Kind::Qemu {
            if spec.agent {
                conf.insert("agent".into(), "1".into());
            }
            if let Some(o) = &spec.ostype {
                conf.insert("ostype".into(), o.clone());
            }
        }
        for (k, v) in &spec.extra {
            conf.insert(k.clone(), v.clone());
        }
        let created_at = start - spec.created_ago.max(0);
        let booted = (start - spec.booted_ago.max(0)).max(created_at);
        let mem = spec.memory_mib;
        let mut vm = Vm {
            vmid,
            kind: spec.kind,
            node: spec.node.clone(),
            status: spec.status,
            conf,
            pending: BTreeMap::new(),
            pending_delete: BTreeSet::new(),
            pool: spec.pool.clone(),
            hastate: spec.hastate.clone(),
            cpu_load: spec.cpu_load.clone().unwrap_or(Pattern::Constant(0.5)),
            mem_load: spec
                .mem_load
                .clone()
                .unwrap_or(Pattern::Constant(mem as f64 / 2.0)),
            balloon_stats: spec.balloon_stats,
            refuse_cpu_unplug: spec.refuse_cpu_unplug,
            refuse_mem_unplug: spec.refuse_mem_unplug,
            io_overhead: spec.io_overhead,
            metrics_gap: spec.metrics_gap,
            agent_running: spec.agent_running,
            onlines_cpu: spec.onlines_cpu,
            onlines_mem: spec.onlines_mem,
            boot_vcpus: 0,
            boot_mem_mib: 0,
            online_vcpus: 0,
            online_mem_mib: 0,
            created_at,
            history: Vec::new(),
            status_reads: 0,
            digest: String::new(),
            oom_kills: 0,
            maxdisk: if spec.kind == Kind::Qemu {
                32 << 30
            } else {
                8 << 30
            },
        };
        let (vcpus, mem_mib, cpulimit) = (vm.vcpus(), vm.mem_mib(), vm.cpulimit());
        (vm.boot_vcpus, vm.boot_mem_mib) = (vcpus, mem_mib);
        (vm.online_vcpus, vm.online_mem_mib) = (vcpus, mem_mib);
        if spec.status.is_live() && booted > created_at {
            vm.history.push(Epoch {
                from: created_at,
                vcpus,
                mem_mib,
                status: VmStatus::Stopped,
                booted: created_at,
                cpulimit,
                online_vcpus: vcpus,
                online_mem_mib: mem_mib,
            });
        }
        vm.history.push(Epoch {
            from: if spec.status.is_live() {
                booted
            } else {
                created_at
            },
            vcpus,
            mem_mib,
            status: spec.status,
            booted,
            cpulimit,
            online_vcpus: vcpus,
            online_mem_mib: mem_mib,
        });
        vm.recompute_digest();
        vm
    }

    fn conf_u64(&self, key: &str) -> Option<u64> {
        self.conf.get(key).and_then(|v| v.trim().parse().ok())
    }

    pub fn sockets(&self) -> u32 {
        self.conf_u64("sockets").unwrap_or(1).clamp(1, 4096) as u32
    }
    pub fn cores(&self) -> u32 {
        self.conf_u64("cores").unwrap_or(1).clamp(1, 4096) as u32
    }
    pub fn maxcpus(&self) -> u32 {
        self.sockets().saturating_mul(self.cores())
    }
    /// Current vCPUs (`vcpus`, or sockets × cores).
    pub fn vcpus(&self) -> u32 {
        match self.conf_u64("vcpus") {
            Some(v) if v > 0 => v.min(u32::MAX as u64) as u32,
            _ => self.maxcpus(),
        }
    }
    pub fn mem_mib(&self) -> u64 {
        self.conf
            .get("memory")
            .and_then(|v| parse_memory(v))
            .unwrap_or(512)
    }
    /// `balloon` key (None = absent = device on with target = memory).
    pub fn balloon(&self) -> Option<u64> {
        self.conf_u64("balloon")
    }
    pub fn balloon_device(&self) -> bool {
        self.balloon() != Some(0)
    }
    pub fn numa(&self) -> bool {
        self.conf.get("numa").map(|v| v == "1").unwrap_or(false)
    }
    pub fn cpulimit(&self) -> f64 {
        self.conf
            .get("cpulimit")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    }
    pub fn hotplug(&self) -> BTreeSet<String> {
        hotplug_features(self.conf.get("hotplug").map(|s| s.as_str()))
    }
    pub fn template(&self) -> bool {
        self.conf.get("template").map(|v| v == "1").unwrap_or(false)
    }
    pub fn lock(&self) -> Option<&str> {
        self.conf.get("lock").map(|s| s.as_str())
    }
    pub fn name(&self) -> String {
        self.conf
            .get("name")
            .cloned()
            .unwrap_or_else(|| format!("VM {}", self.vmid))
    }
    pub fn tags(&self) -> Option<&str> {
        self.conf
            .get("tags")
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    /// Serialised like a `qemu-server/<vmid>.conf` file; the digest is computed over it.
    pub fn serialize(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.conf {
            s.push_str(k);
            s.push_str(": ");
            s.push_str(v);
            s.push('\n');
        }
        if !self.pending.is_empty() || !self.pending_delete.is_empty() {
            s.push_str("\n[PENDING]\n");
            if !self.pending_delete.is_empty() {
                let d: Vec<&str> = self.pending_delete.iter().map(|s| s.as_str()).collect();
                s.push_str("delete: ");
                s.push_str(&d.join(","));
                s.push('\n');
            }
            for (k, v) in &self.pending {
                s.push_str(k);
                s.push_str(": ");
                s.push_str(v);
                s.push('\n');
            }
        }
        s
    }

    pub fn recompute_digest(&mut self) {
        // Like PVE: a SHA-1-sized (40 hex digits) digest of the config file.
        let d = Sha256::digest(self.serialize().as_bytes());
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        self.digest = hex[..40].to_string();
    }

    /// The `ostype` is a Windows one (qemu-server Helpers.pm `windows_version` > 0).
    pub fn is_windows(&self) -> bool {
        self.conf
            .get("ostype")
            .is_some_and(|o| is_windows_ostype(o))
    }

    /// vCPUs the guest lets go before it refuses an unplug (None: all); Windows: none.
    pub fn cpu_unplug_limit(&self) -> Option<u32> {
        if self.is_windows() {
            Some(0)
        } else {
            self.refuse_cpu_unplug
        }
    }

    /// DIMMs the guest lets go before it refuses an unplug (None: all); Windows: none.
    pub fn mem_unplug_limit(&self) -> Option<u32> {
        if self.is_windows() {
            Some(0)
        } else {
            self.refuse_mem_unplug
        }
    }

    /// Whether the guest agent answers: the `agent` key is set with `enabled` (without it
    /// QEMU has no agent channel), the VM runs (not paused) and the agent runs in the guest.
    pub fn agent_answers(&self) -> bool {
        self.conf.get("agent").is_some_and(|a| agent_enabled(a))
            && self.status == VmStatus::Running
            && self.agent_running
    }

    /// Brings the guest's online vCPUs and memory up to date with its size: a stopped guest
    /// boots with everything online; a running one onlines hot-added vCPUs / DIMMs only if
    /// it does so, and an unplug removes the offline ones first.
    fn update_online(&mut self) {
        let (vcpus, mem) = (self.vcpus(), self.mem_mib());
        if !self.status.is_live() {
            (self.boot_vcpus, self.boot_mem_mib) = (vcpus, mem);
            (self.online_vcpus, self.online_mem_mib) = (vcpus, mem);
            return;
        }
        self.online_vcpus = if self.onlines_cpu {
            vcpus
        } else {
            self.online_vcpus.min(vcpus)
        };
        self.online_mem_mib = if self.onlines_mem {
            mem
        } else {
            self.online_mem_mib.min(mem)
        };
        self.boot_vcpus = self.boot_vcpus.min(vcpus);
        self.boot_mem_mib = self.boot_mem_mib.min(mem);
    }

    /// Call after any change: new digest, and a new history epoch if size or state changed.
    pub fn touch(&mut self, now: i64) {
        self.recompute_digest();
        self.update_online();
        let (vcpus, mem_mib, status, cpulimit) =
            (self.vcpus(), self.mem_mib(), self.status, self.cpulimit());
        let (online_vcpus, online_mem_mib) = (self.online_vcpus, self.online_mem_mib);
        let last = self.history.last().copied();
        let booted = match last {
            Some(l) if l.status.is_live() && status.is_live() => l.booted,
            Some(l) if !status.is_live() => l.booted,
            _ => now,
        };
        let e = Epoch {
            from: now,
            vcpus,
            mem_mib,
            status,
            booted,
            cpulimit,
            online_vcpus,
            online_mem_mib,
        };
        match last {
            Some(l)
                if l.vcpus == vcpus
                    && l.mem_mib == mem_mib
                    && l.status == status
                    && l.cpulimit == cpulimit
                    && l.online_vcpus == online_vcpus
                    && l.online_mem_mib == online_mem_mib => {}
            Some(l) if l.from >= now => {
                if let Some(x) = self.history.last_mut() {
                    *x = Epoch { from: l.from, ..e };
                }
            }
            _ => self.history.push(e),
        }
    }

    /// The size and state at simulated time `t` (None before the VM existed).
    pub fn epoch_at(&self, t: i64) -> Option<Epoch> {
        if t < self.created_at {
            return None;
        }
        let idx = self.history.partition_point(|e| e.from <= t);
        if idx == 0 {
            // Before the first recorded epoch but after creation: stopped.
            return self.history.first().map(|e| Epoch {
                from: self.created_at,
                status: VmStatus::Stopped,
                ..*e
            });
        }
        Some(self.history[idx - 1])
    }
}

/// qemu-server Helpers.pm `windows_version`: `wxp`, `w2k`, `w2k3`, `w2k8`, `wvista`, `winN`.
pub(crate) fn is_windows_ostype(ostype: &str) -> bool {
    matches!(ostype, "wxp" | "w2k" | "w2k3" | "w2k8" | "wvista")
        || ostype
            .strip_prefix("win")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The `enabled` flag of an `agent` property string (`1`, `0`, `enabled=1,...`,
/// `type=virtio`): the default key is `enabled`, which defaults to 0.
pub(crate) fn agent_enabled(value: &str) -> bool {
    let mut enabled = false;
    for part in value.split(',') {
        let part = part.trim();
        let v = match part.split_once('=') {
            Some(("enabled", v)) => v,
            Some(_) => continue,
            None => part,
        };
        enabled = matches!(v, "1" | "yes" | "on" | "true");
    }
    enabled
}

pub(crate) fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_ostypes_as_qemu_server_names_them() {
        for o in [
            "win7", "win8", "win10", "win11", "w2k", "w2k3", "w2k8", "wxp", "wvista",
        ] {
            assert!(is_windows_ostype(o), "{o}");
        }
        for o in [
            "l26", "l24", "other", "solaris", "win", "winxp", "w2k12", "",
        ] {
            assert!(!is_windows_ostype(o), "{o}");
        }
    }

    #[test]
    fn agent_property_string_enabled_flag() {
        for (v, on) in [
            ("1", true),
            ("0", false),
            ("enabled=1,fstrim_cloned_disks=1", true),
            ("1,type=isa", true),
            ("type=virtio", false),
            ("enabled=0,type=virtio", false),
            ("fstrim_cloned_disks=1", false),
        ] {
            assert_eq!(agent_enabled(v), on, "{v}");
        }
    }

    #[test]
    fn online_counts_follow_boot_grow_and_unplug() {
        let spec = VmSpec::new(101, "pve1")
            .cores(4)
            .vcpus(2)
            .memory_mib(4096)
            .onlines(false, false);
        let mut vm = Vm::from_spec(&spec, 1_000_000);
        assert_eq!((vm.online_vcpus, vm.online_mem_mib), (2, 4096));
        vm.conf.insert("vcpus".into(), "4".into());
        vm.conf.insert("memory".into(), "6144".into());
        vm.touch(1_000_010);
        assert_eq!((vm.online_vcpus, vm.online_mem_mib), (2, 4096));
        let e = vm.epoch_at(1_000_010).unwrap();
        assert_eq!((e.vcpus, e.online_vcpus, e.online_mem_mib), (4, 2, 4096));
        // A reboot brings everything online.
        vm.status = VmStatus::Stopped;
        vm.touch(1_000_020);
        vm.status = VmStatus::Running;
        vm.touch(1_000_030);
        assert_eq!((vm.online_vcpus, vm.online_mem_mib), (4, 6144));
        assert_eq!((vm.boot_vcpus, vm.boot_mem_mib), (4, 6144));
    }
}
