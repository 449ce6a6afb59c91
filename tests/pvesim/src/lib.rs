//! # pvesim — a simulated Proxmox VE cluster over HTTPS
//!
//! For pvescale's integration tests, benchmarks and demo (never part of the release binary).
//! It serves the part of the Proxmox VE API that pvescale uses on `https://127.0.0.1:PORT`
//! with a certificate made at start, and behaves like `shared/pve-api/FACTS.md` describes:
//! token and ticket (+CSRF) authentication, the `{"data": ...}` envelope and error shapes
//! (400 with `errors`, 401 with an empty body, 403, 500, 501, 59x), `cluster/resources`,
//! `cluster/metrics/export` (8.2.5+), `rrddata`, `config` (merged and `current=1`), `pending`,
//! `digest`, asynchronous config writes with tasks, hotplug rules (vCPUs ≤ sockets × cores,
//! memory on the DIMM grid with numa, refused unplugs, pending keys), locks, faults on demand,
//! and load following a [`Pattern`] over *simulated* time that reacts to the VM's size.
//!
//! ```no_run
//! use std::time::Duration;
//! use pvesim::{Fault, NodeSpec, Pattern, Privs, Sim, VmSpec};
//!
//! let sim = Sim::builder()
//!     .version("8.4")
//!     .node(NodeSpec::new("pve1").cpus(16).memory_mib(65536))
//!     .vm(VmSpec::new(101, "pve1").name("web1").sockets(1).cores(4).vcpus(2)
//!         .memory_mib(2048).balloon_mib(1024).numa(true)
//!         .hotplug("network,disk,usb,cpu,memory").tags(&["autoscale"]).pool("web")
//!         .cpu_load(Pattern::Constant(1.8)).mem_load(Pattern::Constant(1500.0)))
//!     .token("pvescale@pve!autoscale", "secret", Privs::pvescale())
//!     .user("admin@pam", "password", Privs::all())
//!     .start()
//!     .unwrap();
//! let _url = sim.url();              // https://127.0.0.1:PORT (append /api2/json/...)
//! let _pem = sim.ca_pem();           // trust this CA, or pin sim.fingerprint()
//! sim.advance(Duration::from_secs(600));
//! sim.update_vm(101, |vm| vm.lock = Some("backup".into()));
//! sim.add_fault(Fault::on("POST", "/nodes/pve1/qemu/101/config").status(596).after_apply(true).times(1));
//! let posts = sim.requests().iter().filter(|r| r.method == "POST").count();
//! # let _ = posts;
//! ```
//!
//! ## Time
//! The clock is simulated: it starts at [`DEFAULT_START`] (2026-01-01 00:00 UTC) unless set with
//! [`SimBuilder::start_time`] and moves only with [`Sim::advance`]. Metrics are computed for the
//! simulated time from the guest's [`Pattern`]s and its size history, so a sample from before a
//! resize uses the old size. Pattern times are seconds relative to the start time. Tasks
//! (asynchronous writes) finish after a short *real* delay ([`SimBuilder::task_duration`]).
//!
//! ## Recorded requests
//! Every request is recorded as a [`Recorded`]: paths are percent-decoded and **without** the
//! `/api2/json` prefix. Passwords are stored as `<redacted>`; token secrets, tickets and cookies
//! are never stored.
//!
//! ## Faults
//! [`Fault`] matches by method and exact path or prefix (again without `/api2/json`); the first
//! active matching fault applies. See [`FaultKind`]: status (401/59x with an empty body),
//! latency, hang then close, close, malformed JSON, wrong JSON types, huge body, a task that
//! never finishes, a task ending `WARNINGS: n`. `.after_apply(true)` handles the request first
//! (an asynchronous write is carried out before the answer), `.times(n)`, `.skip(n)`,
//! `Fault::any().unauthorized_from(n)`.
//!
//! ## Endpoints
//! `GET /version`, `POST|GET /access/ticket`, `GET /access/permissions`,
//! `GET /cluster/resources`, `GET /cluster/status`, `GET /cluster/metrics/export` (8.2.5+),
//! `GET /nodes`, `GET /nodes/{node}/status`, `GET /nodes/{node}/qemu`,
//! `GET /nodes/{node}/qemu/{vmid}/{status/current,config,pending,rrddata}`,
//! `POST|PUT /nodes/{node}/qemu/{vmid}/config`, `GET /nodes/{node}/tasks` (finished config
//! tasks), `GET /nodes/{node}/tasks/{upid}/{status,log}`,
//! `GET /nodes/{node}/qemu/{vmid}/agent/{get-vcpus,get-memory-blocks,get-memory-block-info}`.
//!
//! ## Guests
//! A guest has vCPUs and memory *online*: what it booted with, plus hot-added ones only if it
//! brings them online ([`VmSpec::onlines`], default yes); an unplug takes offline ones first,
//! a reboot brings everything online. Its figures are limited to what is online (a 2 → 4 vCPU
//! grow of a guest that does not online reads 50 % at most); [`Sim::demand`] stays the truth
//! and [`Sim::online_vcpus`] / [`Sim::online_memory_mib`] tell what is online. The guest agent
//! endpoints answer from the same model ([`VmSpec::agent`], [`VmSpec::agent_running`]). A
//! Windows [`VmSpec::ostype`] refuses every vCPU and DIMM unplug.
//!
//! ## Simplifications
//! No gzip; the 3 s delay of failed logins is off unless [`SimBuilder::auth_failure_delay`];
//! `status/current` returns `cpu: 0` on the first call per VM (not per daemon worker);
//! privileges are a set on `/` plus optional sets on sub-paths (no token privilege separation);
//! only QEMU guests have per-VM endpoints (containers appear in `cluster/resources` and
//! `metrics/export`); a stopped guest has no metric fields in `rrddata`; kept-alive connections
//! never time out; all nodes run the cluster's version; `metrics/export` skips a node marked
//! [`Node::export_unreachable`] at once (the real server first waits out its per-node timeout,
//! 5 s, 20 s since 9.0.8).

mod api;
mod config;
mod fault;
mod http;
mod metrics;
mod model;
pub mod schema;
mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use config::{STATIC_MEM_MIB, dimm_grid, grid_round_down, grid_round_up, max_mem_mib};
pub use fault::{Fault, FaultKind, PathMatch};
pub use metrics::Demand;
pub use model::{ALL_PRIVS, Kind, Node, NodeSpec, Pattern, Privs, Version, VmSpec, VmStatus};

use api::{FaultSlot, Shared, TaskState, User, World, lock};
use metrics::Noise;
use model::Vm;

/// Default simulated start: 2026-01-01 00:00:00 UTC.
pub const DEFAULT_START: i64 = 1_767_225_600;

/// How a request authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// No credentials (or the ticket call itself).
    None,
    /// API token `user@realm!tokenid` (never the secret).
    Token(String),
    /// Ticket cookie of this user.
    Ticket(String),
    /// Credentials were sent but rejected.
    Invalid,
}

/// One request as the simulator saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// 1-based arrival order.
    pub seq: u64,
    /// Connection number (same number = same kept-alive connection).
    pub conn: u64,
    pub method: String,
    /// Percent-decoded path without the `/api2/json` prefix, e.g. `/nodes/pve1/qemu/101/config`.
    pub path: String,
    /// Query string parameters (decoded).
    pub query: Vec<(String, String)>,
    /// Body parameters (form or JSON, decoded).
    pub form: Vec<(String, String)>,
    /// Status sent (0 when the connection was closed or left hanging).
    pub status: u16,
    /// Response body length.
    pub response_bytes: usize,
    /// Request body length.
    pub request_bytes: usize,
    pub auth: AuthKind,
    /// A `CSRFPreventionToken` header was present.
    pub csrf_token: bool,
    pub content_type: Option<String>,
    /// Which fault hit this request, if any.
    pub fault: Option<String>,
    /// Simulated time of the request.
    pub sim_time: i64,
}

impl Recorded {
    /// A query or body parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .chain(self.form.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All parameter names (query, then body).
    pub fn param_names(&self) -> Vec<&str> {
        self.query
            .iter()
            .chain(self.form.iter())
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// `method` equals and `path` starts with `prefix`.
    pub fn is(&self, method: &str, prefix: &str) -> bool {
        self.method == method && self.path.starts_with(prefix)
    }
}

/// One entry of a VM's size history.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeChange {
    /// Simulated time from which this size applies.
    pub at: i64,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub status: VmStatus,
}

/// A snapshot of a guest.
#[derive(Clone, Debug)]
pub struct VmView {
    pub vmid: u32,
    pub kind: Kind,
    pub node: String,
    pub status: VmStatus,
    /// Current (running) config, raw values.
    pub config: BTreeMap<String, String>,
    pub pending: BTreeMap<String, String>,
    pub pending_delete: BTreeSet<String>,
    pub digest: String,
    pub lock: Option<String>,
    pub template: bool,
    pub pool: Option<String>,
    /// Current vCPUs (`vcpus` or sockets × cores).
    pub vcpus: u32,
    /// sockets × cores.
    pub maxcpus: u32,
    pub memory_mib: u64,
    pub balloon_mib: Option<u64>,
    pub history: Vec<SizeChange>,
    /// A container's memory set below its use (each an OOM kill inside it).
    pub oom_kills: u32,
}

impl VmView {
    /// Current value of a config key.
    pub fn current(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(|s| s.as_str())
    }
    /// Pending value of a config key.
    pub fn pending_value(&self, key: &str) -> Option<&str> {
        self.pending.get(key).map(|s| s.as_str())
    }
    /// Anything pending (values or deletions).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.pending_delete.is_empty()
    }
}

/// Mutable view of a guest for [`Sim::update_vm`]. Changes are written back after the closure;
/// the digest changes if the config changed, and a new size/state epoch starts at `now()`.
#[derive(Clone, Debug)]
pub struct VmEdit {
    pub node: String,
    pub status: VmStatus,
    pub lock: Option<String>,
    pub template: bool,
    pub tags: Vec<String>,
    pub pool: Option<String>,
    pub hastate: Option<String>,
    /// Current config without `lock`, `template` and `tags` (edit those through the fields).
    pub config: BTreeMap<String, String>,
    pub pending: BTreeMap<String, String>,
    pub pending_delete: BTreeSet<String>,
    pub cpu_load: Pattern,
    pub mem_load: Pattern,
    pub balloon_stats: bool,
    pub refuse_cpu_unplug: Option<u32>,
    pub refuse_mem_unplug: Option<u32>,
    /// Whether the guest agent runs in the guest ([`VmSpec::agent_running`]).
    pub agent_running: bool,
    /// Whether the guest onlines hot-added vCPUs / memory ([`VmSpec::onlines`]). Setting one
    /// to true brings what is offline online at once (as an admin's `chcpu -e` would);
    /// setting it to false leaves what is online as it is, later hot-adds stay offline.
    pub onlines_cpu: bool,
    pub onlines_mem: bool,
    /// Set to delete the guest.
    pub remove: bool,
}

/// A task as the simulator holds it.
#[derive(Clone, Debug)]
pub struct TaskView {
    pub upid: String,
    pub node: String,
    pub vmid: u32,
    pub user: String,
    pub running: bool,
    pub exitstatus: Option<String>,
    pub log: Vec<String>,
}

/// Builder of a [`Sim`].
pub struct SimBuilder {
    version: Version,
    nodes: Vec<NodeSpec>,
    vms: Vec<VmSpec>,
    tokens: Vec<(String, String, Privs)>,
    users: Vec<(String, String, Privs, bool)>,
    latency: Duration,
    auth_delay: Duration,
    task_duration: Duration,
    refusal_delay: Duration,
    proxy_timeout: Duration,
    start: i64,
    noise: Noise,
    cluster_name: String,
}

impl SimBuilder {
    /// PVE release: `"8.0"` (memory as JSON integer), `"8.1"`..`"8.4"` (memory as string;
    /// `metrics/export` from 8.2.5, error `message` from 8.4), `"9.0"`/`"9.1"` (PVE 9 RRD
    /// layout, `memhost`, `pressure*`). A patch level may follow (`"8.2.4"`); a bare release
    /// stands for one patch level of it (8.2 for 8.2.7). Default `"8.4"`.
    pub fn version(mut self, v: &str) -> Self {
        self.version = Version::parse(v);
        self
    }
    pub fn node(mut self, n: NodeSpec) -> Self {
        self.nodes.retain(|x| x.name != n.name);
        self.nodes.push(n);
        self
    }
    pub fn vm(mut self, v: VmSpec) -> Self {
        self.vms.retain(|x| x.vmid != v.vmid);
        self.vms.push(v);
        self
    }
    /// An API token `user@realm!tokenid` with its secret and privileges.
    pub fn token(mut self, id: &str, secret: &str, privs: Privs) -> Self {
        self.tokens.push((id.into(), secret.into(), privs));
        self
    }
    /// A user for ticket login (`user@realm`).
    pub fn user(mut self, name: &str, password: &str, privs: Privs) -> Self {
        self.users
            .push((name.into(), password.into(), privs, false));
        self
    }
    /// A user with TFA configured: the ticket call answers `NeedTFA: 1`.
    pub fn user_tfa(mut self, name: &str, password: &str, privs: Privs) -> Self {
        self.users.push((name.into(), password.into(), privs, true));
        self
    }
    /// Added to every request (real time).
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }
    /// Delay of a failed authentication (the real server waits ~3 s). Default 0.
    pub fn auth_failure_delay(mut self, d: Duration) -> Self {
        self.auth_delay = d;
        self
    }
    /// Real time an asynchronous config task takes. Default 30 ms.
    pub fn task_duration(mut self, d: Duration) -> Self {
        self.task_duration = d;
        self
    }
    /// Real time a refused unplug takes before failing. Default 200 ms.
    pub fn unplug_refusal_delay(mut self, d: Duration) -> Self {
        self.refusal_delay = d;
        self
    }
    /// How long a synchronous call may take before the proxy answers 596 (real: 30 s).
    /// Only a refused unplug on a `PUT` takes long enough (see `unplug_refusal_delay`).
    pub fn proxy_timeout(mut self, d: Duration) -> Self {
        self.proxy_timeout = d;
        self
    }
    /// Simulated unix time at start.
    pub fn start_time(mut self, t: i64) -> Self {
        self.start = t;
        self
    }
    /// Deterministic relative noise on load (e.g. 0.02 = ±2 %). Default none.
    pub fn noise(mut self, amplitude: f64, seed: u64) -> Self {
        self.noise = Noise {
            seed,
            amplitude: amplitude.abs(),
        };
        self
    }
    pub fn cluster_name(mut self, name: &str) -> Self {
        self.cluster_name = name.to_string();
        self
    }

    /// A large cluster for benchmarks: `nodes` nodes `pve1..` (64 CPUs, 256 GiB) and `vms` QEMU
    /// VMs with ids from 1000, varied sizes, hotplug settings, balloon setups, tags
    /// (`autoscale` on ~80 %), pools, a few locked / stopped VMs, one template, and load
    /// patterns (constant, daily, spikes, ramps, steps), plus one LXC container per node
    /// (ids 200..). Deterministic for a given `seed`.
    pub fn generated(mut self, nodes: usize, vms: usize, seed: u64) -> Self {
        let nodes = nodes.max(1);
        for i in 0..nodes {
            self = self.node(
                NodeSpec::new(&format!("pve{}", i + 1))
                    .cpus(64)
                    .memory_mib(262144),
            );
        }
        let mut rng = seed ^ 0x5DEE_CE66_D1CE_4E5B;
        let mut next = move || {
            rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for i in 0..vms {
            let vmid = 1000 + i as u32;
            let node = format!("pve{}", i % nodes + 1);
            let cores = [2u32, 4, 4, 8][(next() % 4) as usize];
            let sockets = if next() % 10 == 0 { 2 } else { 1 };
            let max = cores * sockets;
            let vcpus = 1 + (next() % max as u64) as u32;
            let mem = [2048u64, 4096, 4096, 8192, 16384][(next() % 5) as usize];
            let mut spec = VmSpec::new(vmid, &node)
                .name(&format!("vm-{vmid}"))
                .cores(cores)
                .sockets(sockets)
                .vcpus(vcpus)
                .memory_mib(mem);
            match next() % 10 {
                0..=4 => {}
                5..=7 => spec = spec.balloon_mib(mem / 2),
                _ => spec = spec.balloon_mib(0),
            }
            if next() % 100 < 85 {
                spec = spec.live_scalable();
            }
            if next() % 10 == 0 {
                spec = spec.running(false);
            }
            let r = next() % 100;
            if r < 80 {
                if r < 20 {
                    spec = spec.tags(&["autoscale", "prod"]);
                } else {
                    spec = spec.tags(&["autoscale"]);
                }
            }
            if i % 5 == 0 {
                spec = spec.pool("web");
            }
            if i % 50 == 17 {
                spec = spec.lock("backup");
            }
            if i == 7 {
                spec = spec.template(true);
            }
            spec = spec.balloon_stats(next() % 10 < 7);
            let v = vcpus as f64;
            let frac = (next() % 1000) as f64 / 1000.0;
            let cpu = match next() % 5 {
                0 => Pattern::Constant(v * (0.05 + 0.9 * frac)),
                1 => Pattern::Periodic {
                    base: v * 0.5,
                    amplitude: v * 0.4 * frac,
                    period: 86400,
                },
                2 => Pattern::Spikes {
                    base: v * 0.2,
                    peak: v * 0.95,
                    every: 3600,
                    duration: 600,
                },
                3 => Pattern::Ramp {
                    from: v * 0.2,
                    to: v * 0.9,
                    start: -3600,
                    end: 3600,
                },
                _ => Pattern::Step {
                    before: v * 0.3,
                    after: v * (0.1 + 0.85 * frac),
                    at: 0,
                },
            };
            let m = mem as f64;
            let memp = match next() % 3 {
                0 => Pattern::Constant(m * (0.2 + 0.75 * frac)),
                1 => Pattern::Periodic {
                    base: m * 0.55,
                    amplitude: m * 0.3,
                    period: 86400,
                },
                _ => Pattern::Ramp {
                    from: m * 0.3,
                    to: m * 0.92,
                    start: -7200,
                    end: 7200,
                },
            };
            self = self.vm(spec.cpu_load(cpu).mem_load(memp));
        }
        for n in 0..nodes {
            self = self.vm(VmSpec::new(200 + n as u32, &format!("pve{}", n + 1))
                .lxc()
                .name(&format!("ct-{}", 200 + n))
                .cores(2)
                .memory_mib(1024)
                .tags(&["autoscale"])
                .cpu_load(Pattern::Constant(0.3))
                .mem_load(Pattern::Constant(400.0)));
        }
        self
    }

    /// Starts the HTTPS server on 127.0.0.1 (random port). Nodes that VMs name but that were
    /// not declared are created with default sizes.
    pub fn start(self) -> std::io::Result<Sim> {
        let mut nodes: Vec<Node> = self.nodes.iter().map(Node::from).collect();
        for v in &self.vms {
            if !nodes.iter().any(|n| n.name == v.node) {
                nodes.push(Node::from(&NodeSpec::new(&v.node)));
            }
        }
        if nodes.is_empty() {
            nodes.push(Node::from(&NodeSpec::new("pve1")));
        }
        let vms: BTreeMap<u32, Vm> = self
            .vms
            .iter()
            .map(|s| (s.vmid, Vm::from_spec(s, self.start)))
            .collect();
        let first_node = nodes[0].name.clone();
        let world = World {
            version: self.version,
            start: self.start,
            offset: 0,
            nodes,
            vms,
            tokens: self
                .tokens
                .into_iter()
                .map(|(id, s, p)| (id, (s, p)))
                .collect(),
            users: self
                .users
                .into_iter()
                .map(|(n, pw, privs, tfa)| {
                    (
                        n,
                        User {
                            password: pw,
                            privs,
                            tfa,
                        },
                    )
                })
                .collect::<HashMap<_, _>>(),
            tickets: HashMap::new(),
            tasks: BTreeMap::new(),
            task_seq: 0,
            noise: self.noise,
            cluster_name: self.cluster_name.clone(),
            quorate: true,
            ha_master: None,
        };
        let certs = tls::make_certs(&self.cluster_name, &first_node)?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            latency: self.latency,
            auth_delay: self.auth_delay,
            task_duration: self.task_duration,
            refusal_delay: self.refusal_delay,
            proxy_timeout: self.proxy_timeout,
            shutdown: shutdown.clone(),
        });
        let s2 = shared.clone();
        let handler: Arc<http::Handler> = Arc::new(move |req| api::handle(&s2, req));
        let server = http::Server::start(certs.server_config.clone(), handler, shutdown)?;
        let url = format!("https://127.0.0.1:{}", server.addr.port());
        Ok(Sim {
            shared,
            server,
            certs,
            url,
        })
    }
}

/// A running simulated cluster; the server stops when it is dropped.
pub struct Sim {
    shared: Arc<Shared>,
    server: http::Server,
    certs: tls::Certs,
    url: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.server.stop();
    }
}

impl Sim {
    pub fn builder() -> SimBuilder {
        SimBuilder {
            version: Version::new(8, 4),
            nodes: Vec::new(),
            vms: Vec::new(),
            tokens: Vec::new(),
            users: Vec::new(),
            latency: Duration::ZERO,
            auth_delay: Duration::ZERO,
            task_duration: Duration::from_millis(30),
            refusal_delay: Duration::from_millis(200),
            proxy_timeout: Duration::from_secs(30),
            start: DEFAULT_START,
            noise: Noise {
                seed: 0,
                amplitude: 0.0,
            },
            cluster_name: "simcluster".into(),
        }
    }

    /// `https://127.0.0.1:PORT` (no trailing slash, no `/api2/json`).
    pub fn url(&self) -> &str {
        &self.url
    }
    /// `https://127.0.0.1:PORT/api2/json`.
    pub fn api_url(&self) -> String {
        format!("{}/api2/json", self.url)
    }
    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }
    /// PEM of the CA that signed the server certificate (SAN 127.0.0.1, localhost, first node).
    pub fn ca_pem(&self) -> &str {
        &self.certs.ca_pem
    }
    pub fn ca_der(&self) -> &[u8] {
        &self.certs.ca_der
    }
    /// PEM of the server (leaf) certificate.
    pub fn cert_pem(&self) -> &str {
        &self.certs.leaf_pem
    }
    pub fn cert_der(&self) -> &[u8] {
        &self.certs.leaf_der
    }
    /// Writes the CA PEM to `dir/pvesim-ca.pem` and returns the path.
    pub fn write_ca_file(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let p = dir.join("pvesim-ca.pem");
        std::fs::write(&p, self.certs.ca_pem.as_bytes())?;
        Ok(p)
    }
    /// SHA-256 of the server certificate DER, `AB:CD:...` upper case.
    pub fn fingerprint(&self) -> String {
        tls::fingerprint(&self.certs.leaf_der)
    }
    /// SHA-256 of the CA certificate DER, `AB:CD:...`.
    pub fn ca_fingerprint(&self) -> String {
        tls::fingerprint(&self.certs.ca_der)
    }
    pub fn version(&self) -> Version {
        lock(&self.shared.world).version
    }

    /// Simulated unix time.
    pub fn now(&self) -> i64 {
        lock(&self.shared.world).now()
    }
    /// Simulated time at start.
    pub fn start_time(&self) -> i64 {
        lock(&self.shared.world).start
    }
    /// Moves the simulated clock forward.
    pub fn advance(&self, d: Duration) {
        lock(&self.shared.world).offset += d.as_secs() as i64;
    }
    /// Sets the simulated clock (may go backwards; tests only).
    pub fn set_time(&self, t: i64) {
        let mut w = lock(&self.shared.world);
        w.offset = t - w.start;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.log).clone()
    }
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }
    /// Number of recorded requests with this method whose path starts with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.is(method, prefix))
            .count()
    }

    fn settle(&self) {
        let mut w = lock(&self.shared.world);
        w.process_tasks(self.shared.refusal_delay);
    }

    /// Snapshot of a guest (finished tasks are applied first).
    pub fn vm(&self, vmid: u32) -> Option<VmView> {
        self.settle();
        let w = lock(&self.shared.world);
        w.vms.get(&vmid).map(view)
    }
    pub fn vms(&self) -> Vec<VmView> {
        self.settle();
        lock(&self.shared.world).vms.values().map(view).collect()
    }
    pub fn vmids(&self) -> Vec<u32> {
        lock(&self.shared.world).vms.keys().copied().collect()
    }
    /// What a guest wants at simulated time `t` (unix seconds), whatever its size: its
    /// patterns with the noise of [`SimBuilder::noise`], exactly as its figures are computed
    /// from. The ground truth for benchmarks; pvescale sees only what the size serves. None if
    /// the guest does not exist.
    pub fn demand(&self, vmid: u32, t: i64) -> Option<Demand> {
        let w = lock(&self.shared.world);
        w.vms
            .get(&vmid)
            .map(|vm| metrics::vm_demand(vm, t, w.start, w.noise))
    }

    /// The vCPUs the guest has online now: those it booted with, plus hot-added ones if it
    /// onlines CPUs ([`VmSpec::onlines`]); what its CPU figures are limited to. None if the
    /// guest does not exist.
    pub fn online_vcpus(&self, vmid: u32) -> Option<u32> {
        self.settle();
        lock(&self.shared.world)
            .vms
            .get(&vmid)
            .map(|vm| vm.online_vcpus)
    }

    /// The memory (MiB) the guest has online now: what it booted with, plus hot-plugged DIMMs
    /// if it onlines memory; what its memory in use is limited to. None if it does not exist.
    pub fn online_memory_mib(&self, vmid: u32) -> Option<u64> {
        self.settle();
        lock(&self.shared.world)
            .vms
            .get(&vmid)
            .map(|vm| vm.online_mem_mib)
    }

    /// Changes a guest; returns false if it does not exist.
    pub fn update_vm(&self, vmid: u32, f: impl FnOnce(&mut VmEdit)) -> bool {
        self.settle();
        let mut w = lock(&self.shared.world);
        let now = w.now();
        let Some(vm) = w.vms.get_mut(&vmid) else {
            return false;
        };
        let mut config = vm.conf.clone();
        let lock_v = config.remove("lock");
        let template = config.remove("template").is_some_and(|t| t == "1");
        let tags = config
            .remove("tags")
            .map(|t| config::split_list(&t))
            .unwrap_or_default();
        let mut e = VmEdit {
            node: vm.node.clone(),
            status: vm.status,
            lock: lock_v,
            template,
            tags,
            pool: vm.pool.clone(),
            hastate: vm.hastate.clone(),
            config,
            pending: vm.pending.clone(),
            pending_delete: vm.pending_delete.clone(),
            cpu_load: vm.cpu_load.clone(),
            mem_load: vm.mem_load.clone(),
            balloon_stats: vm.balloon_stats,
            refuse_cpu_unplug: vm.refuse_cpu_unplug,
            refuse_mem_unplug: vm.refuse_mem_unplug,
            agent_running: vm.agent_running,
            onlines_cpu: vm.onlines_cpu,
            onlines_mem: vm.onlines_mem,
            remove: false,
        };
        f(&mut e);
        if e.remove {
            w.vms.remove(&vmid);
            return true;
        }
        let mut conf = e.config;
        if let Some(l) = e.lock {
            conf.insert("lock".into(), l);
        }
        if e.template {
            conf.insert("template".into(), "1".into());
        }
        if !e.tags.is_empty() {
            conf.insert("tags".into(), e.tags.join(";"));
        }
        vm.conf = conf;
        vm.node = e.node;
        vm.status = e.status;
        vm.pool = e.pool;
        vm.hastate = e.hastate;
        vm.pending = e.pending;
        vm.pending_delete = e.pending_delete;
        vm.cpu_load = e.cpu_load;
        vm.mem_load = e.mem_load;
        vm.balloon_stats = e.balloon_stats;
        vm.refuse_cpu_unplug = e.refuse_cpu_unplug;
        vm.refuse_mem_unplug = e.refuse_mem_unplug;
        vm.agent_running = e.agent_running;
        vm.onlines_cpu = e.onlines_cpu;
        vm.onlines_mem = e.onlines_mem;
        vm.touch(now);
        true
    }

    /// Adds (or replaces) a guest; its history starts at `now()`-relative offsets of the spec.
    pub fn add_vm(&self, spec: VmSpec) {
        let mut w = lock(&self.shared.world);
        let now = w.now();
        if !w.nodes.iter().any(|n| n.name == spec.node) {
            w.nodes.push(Node::from(&NodeSpec::new(&spec.node)));
        }
        let mut vm = Vm::from_spec(&spec, now);
        // Pattern times stay relative to the simulation start.
        vm.status_reads = 0;
        w.vms.insert(spec.vmid, vm);
    }

    pub fn remove_vm(&self, vmid: u32) -> bool {
        lock(&self.shared.world).vms.remove(&vmid).is_some()
    }

    /// Changes a node (e.g. `online = false`); returns false if it does not exist.
    pub fn update_node(&self, name: &str, f: impl FnOnce(&mut Node)) -> bool {
        let mut w = lock(&self.shared.world);
        match w.nodes.iter_mut().find(|n| n.name == name) {
            Some(n) => {
                f(n);
                true
            }
            None => false,
        }
    }
    /// Makes `metrics/export` skip this node's metrics and its guests' (as the real server
    /// does with a node that fails, times out or is older than 8.2.5); false if no such node.
    /// corosync quorum of the cluster (default: quorate).
    pub fn set_quorate(&self, quorate: bool) {
        lock(&self.shared.world).quorate = quorate;
    }

    /// The HA manager's master and the timestamp of its status (`None`: HA never used).
    pub fn set_ha_master(&self, master: Option<(&str, i64)>) {
        lock(&self.shared.world).ha_master = master.map(|(n, t)| (n.to_string(), t));
    }

    pub fn set_export_unreachable(&self, name: &str, unreachable: bool) -> bool {
        self.update_node(name, |n| n.export_unreachable = unreachable)
    }
    pub fn nodes(&self) -> Vec<Node> {
        lock(&self.shared.world).nodes.clone()
    }

    /// Tasks created so far.
    pub fn tasks(&self) -> Vec<TaskView> {
        self.settle();
        lock(&self.shared.world)
            .tasks
            .values()
            .map(|t| TaskView {
                upid: t.upid.clone(),
                node: t.node.clone(),
                vmid: t.vmid,
                user: t.user.clone(),
                running: t.state == TaskState::Running,
                exitstatus: match &t.state {
                    TaskState::Stopped(e) => Some(e.clone()),
                    TaskState::Running => None,
                },
                log: t.log.clone(),
            })
            .collect()
    }

    /// Waits (real time, up to `timeout`) until no task is running; true if all finished.
    pub fn wait_tasks(&self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            if self.tasks().iter().all(|t| !t.running) {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn add_fault(&self, f: Fault) {
        lock(&self.shared.faults).push(FaultSlot {
            fault: f,
            seen: 0,
            used: 0,
        });
    }
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Adds or replaces an API token.
    pub fn set_token(&self, id: &str, secret: &str, privs: Privs) {
        lock(&self.shared.world)
            .tokens
            .insert(id.into(), (secret.into(), privs));
    }
    pub fn remove_token(&self, id: &str) {
        lock(&self.shared.world).tokens.remove(id);
    }
}

fn view(vm: &Vm) -> VmView {
    VmView {
        vmid: vm.vmid,
        kind: vm.kind,
        node: vm.node.clone(),
        status: vm.status,
        config: vm.conf.clone(),
        pending: vm.pending.clone(),
        pending_delete: vm.pending_delete.clone(),
        digest: vm.digest.clone(),
        lock: vm.lock().map(|s| s.to_string()),
        template: vm.template(),
        pool: vm.pool.clone(),
        vcpus: vm.vcpus(),
        maxcpus: vm.maxcpus(),
        memory_mib: vm.mem_mib(),
        balloon_mib: vm.balloon(),
        oom_kills: vm.oom_kills,
        history: vm
            .history
            .iter()
            .map(|e| SizeChange {
                at: e.from,
                vcpus: e.vcpus,
                memory_mib: e.mem_mib,
                status: e.status,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demand a benchmark reads is the one the figures are computed from: the pattern
    /// with the noise, served up to the VM's size.
    #[test]
    fn demand_is_the_truth_behind_the_figures() {
        let sim = Sim::builder()
            .node(NodeSpec::new("pve1"))
            .vm(VmSpec::new(101, "pve1")
                .sockets(1)
                .cores(8)
                .vcpus(2)
                .memory_mib(4096)
                .io_overhead(0.1)
                .cpu_load(Pattern::Step {
                    before: 1.0,
                    after: 5.0,
                    at: 600,
                })
                .mem_load(Pattern::Constant(3000.0)))
            .noise(0.1, 7)
            .start()
            .unwrap();
        let start = sim.start_time();
        assert!(sim.demand(102, start).is_none());
        let mut differs = false;
        for rel in (0..1200).step_by(10) {
            let t = start + rel;
            let d = sim.demand(101, t).unwrap();
            let cores = if rel < 600 { 1.0 } else { 5.0 };
            assert!(
                (d.cpu_cores / cores - 1.0).abs() <= 0.1 + 1e-9,
                "{rel}: {d:?}"
            );
            assert!(
                (d.memory_mib / 3000.0 - 1.0).abs() <= 0.1 + 1e-9,
                "{rel}: {d:?}"
            );
            differs |= (d.cpu_cores - cores).abs() > 1e-6;
            let w = lock(&sim.shared.world);
            let s = metrics::vm_sample(&w.vms[&101], t, w.start, w.noise).unwrap();
            // Proxmox's figure: what 2 vCPUs serve, with the I/O threads on top.
            let served = d.cpu_cores.min(2.0) * 1.1 / 2.0;
            assert!(
                (s.cpu - served).abs() < 1e-9,
                "{rel}: {} vs {served}",
                s.cpu
            );
            assert_eq!(s.mem_used, (d.memory_mib * 1024.0 * 1024.0) as u64);
        }
        assert!(differs, "the noise is part of the demand");
    }
}
