//! Typed answers of the endpoints pvescale uses. Parsing is lenient where Proxmox versions
//! differ (numbers sent as strings, `memory` as `"[current=]N"` since 8.1), unknown fields
//! are ignored, and a missing figure is `None`, never 0.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::guest::GuestKind;

/// `GET /version`.
#[derive(Debug, Clone, Deserialize)]
pub struct Version {
    /// `8.4`, `9.1`, ...
    #[serde(default)]
    pub release: String,
    /// pve-manager's version, `8.2.5`, ...
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub repoid: Option<String>,
}

impl Version {
    /// (major, minor) of `release`, when it parses.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let (major, minor, _) = self.number()?;
        Some((major, minor))
    }

    /// (major, minor, patch): from `version` where it has the release's major and minor
    /// (`8.2.5`), else from `release` alone with patch 0.
    fn number(&self) -> Option<(u32, u32, u32)> {
        let release = leading_numbers(&self.release);
        let version = leading_numbers(&self.version);
        let (major, minor) = match (release.as_slice(), version.as_slice()) {
            ([major, minor, ..], _) | ([], [major, minor, ..]) => (*major, *minor),
            ([major], _) | ([], [major]) => (*major, 0),
            _ => return None,
        };
        let patch = match version.as_slice() {
            [ma, mi, patch, ..] if (*ma, *mi) == (major, minor) => *patch,
            _ => 0,
        };
        Some((major, minor, patch))
    }

    /// `cluster/metrics/export` exists since pve-manager 8.2.5 (a bare release `8.2` does
    /// not say which 8.2, so it counts as without).
    pub fn has_metrics_export(&self) -> bool {
        self.number().is_some_and(|v| v >= (8, 2, 5))
    }
}

/// The numbers of a dotted version, up to the first part that does not start with digits:
/// `9.0.0~11` → [9, 0, 0].
fn leading_numbers(text: &str) -> Vec<u32> {
    text.trim()
        .split(['.', '-'])
        .map_while(|part| {
            let digits: &str = &part[..part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len())];
            digits.parse().ok()
        })
        .collect()
}

/// Run state of a guest as `cluster/resources` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    Running,
    Stopped,
    Paused,
    /// No data yet (`unknown`) or any other word.
    Unknown(String),
}

impl VmStatus {
    fn parse(text: Option<&str>) -> VmStatus {
        match text {
            Some("running") => VmStatus::Running,
            Some("stopped") => VmStatus::Stopped,
            Some("paused") => VmStatus::Paused,
            Some(other) => VmStatus::Unknown(other.to_string()),
            None => VmStatus::Unknown("unknown".to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            VmStatus::Running => "running",
            VmStatus::Stopped => "stopped",
            VmStatus::Paused => "paused",
            VmStatus::Unknown(text) => text,
        }
    }
}

/// A guest row of `cluster/resources` (`type` `qemu` or `lxc`).
#[derive(Debug, Clone, PartialEq)]
pub struct VmResource {
    pub vmid: u32,
    /// VM or container.
    pub kind: GuestKind,
    pub node: String,
    pub name: Option<String>,
    pub status: VmStatus,
    /// CPU use as a fraction of `maxcpu` (10 s snapshot).
    pub cpu: Option<f64>,
    /// vCPUs the VM currently has.
    pub maxcpu: Option<f64>,
    /// Memory in use, bytes.
    pub mem: Option<u64>,
    /// Memory the VM currently has, bytes.
    pub maxmem: Option<u64>,
    /// Memory as the host sees it (PVE 9), bytes.
    pub memhost: Option<u64>,
    pub uptime: Option<u64>,
    pub template: bool,
    /// Tags, lowercase, in the order Proxmox lists them.
    pub tags: Vec<String>,
    pub pool: Option<String>,
    pub lock: Option<String>,
    pub hastate: Option<String>,
}

/// A node row of `cluster/resources` (figures need Sys.Audit).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResource {
    pub node: String,
    pub status: String,
    pub cpu: Option<f64>,
    pub maxcpu: Option<f64>,
    pub mem: Option<u64>,
    pub maxmem: Option<u64>,
}

/// A row of `GET /cluster/status` (pve-cluster / pve-manager `PVE/API2/Cluster.pm`
/// `get_status`): one `cluster` row, one `node` row per member. `quorate` may be `''`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterStatusRow {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_flag")]
    pub quorate: bool,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub nodeid: Option<u64>,
    #[serde(default, deserialize_with = "de_flag")]
    pub online: bool,
    #[serde(default, deserialize_with = "de_flag")]
    pub local: bool,
}

/// `GET /cluster/ha/status/manager_status`: the HA manager's status file (empty where HA was
/// never used; pve-ha-manager `PVE/API2/HA/Status.pm`).
/// One row of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaskEntry {
    /// The guest it is about (`id`, a string: a VM id for `qmconfig`).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub starttime: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub endtime: Option<u64>,
    /// `OK`, `WARNINGS: n`, or the error.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub status: Option<String>,
}

impl TaskEntry {
    /// The VM a `qmconfig` task changed, and when it ended, if it did change it (ended `OK` or
    /// with warnings: pve-common UPID.pm `status_is_error`).
    pub fn config_change(&self) -> Option<(u32, u64)> {
        if !self.status.as_deref().is_some_and(task_exit_succeeded) {
            return None;
        }
        let vmid = self.id.as_deref()?.parse().ok()?;
        Some((vmid, self.endtime.or(self.starttime)?))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HaManagerStatus {
    #[serde(default)]
    pub manager_status: HaManager,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HaManager {
    #[serde(default, deserialize_with = "de_opt_string")]
    pub master_node: Option<String>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub timestamp: Option<u64>,
}

/// The rows of `cluster/resources` that pvescale uses.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// VMs and containers, in the order listed.
    pub vms: Vec<VmResource>,
    pub nodes: Vec<NodeResource>,
}

/// One raw row; every field optional so that no Proxmox version breaks parsing.
#[derive(Debug, Deserialize)]
pub(crate) struct ResourceRow {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    vmid: Option<u64>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    cpu: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    maxcpu: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    mem: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    memhost: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    uptime: Option<u64>,
    #[serde(default, deserialize_with = "de_flag")]
    template: bool,
    #[serde(default, deserialize_with = "de_opt_string")]
    tags: Option<String>,
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    lock: Option<String>,
    #[serde(default)]
    hastate: Option<String>,
}

impl Resources {
    pub(crate) fn from_rows(rows: Vec<ResourceRow>) -> Resources {
        let mut out = Resources::default();
        for row in rows {
            let guest = match row.kind.as_deref() {
                Some("qemu") => Some(GuestKind::Vm),
                Some("lxc") => Some(GuestKind::Ct),
                _ => None,
            };
            match row.kind.as_deref() {
                Some("qemu" | "lxc") => {
                    let Some(kind) = guest else { continue };
                    let (Some(vmid), Some(node)) = (row.vmid, row.node) else {
                        continue;
                    };
                    let Ok(vmid) = u32::try_from(vmid) else {
                        continue;
                    };
                    out.vms.push(VmResource {
                        vmid,
                        kind,
                        node,
                        name: row.name,
                        status: VmStatus::parse(row.status.as_deref()),
                        cpu: row.cpu,
                        maxcpu: row.maxcpu,
                        mem: row.mem,
                        maxmem: row.maxmem,
                        memhost: row.memhost,
                        uptime: row.uptime,
                        template: row.template,
                        tags: parse_tags(row.tags.as_deref()),
                        pool: row.pool.filter(|p| !p.is_empty()),
                        lock: row.lock.filter(|l| !l.is_empty()),
                        hastate: row.hastate,
                    });
                }
                Some("node") => {
                    let Some(node) = row.node else { continue };
                    out.nodes.push(NodeResource {
                        node,
                        status: row.status.unwrap_or_else(|| "unknown".to_string()),
                        cpu: row.cpu,
                        maxcpu: row.maxcpu,
                        mem: row.mem,
                        maxmem: row.maxmem,
                    });
                }
                _ => {}
            }
        }
        out
    }
}

/// Proxmox separates tags with `;` (also accepts `,` and spaces on input).
pub fn parse_tags(text: Option<&str>) -> Vec<String> {
    text.unwrap_or("")
        .split([';', ',', ' '])
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// One sample of `cluster/metrics/export`. The answer holds millions of them at thousands of
/// VMs, so its text fields are kept inline ([`ShortStr`]): parsing allocates nothing per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub timestamp: u64,
    /// `qemu/101`, `node/pve1`, `lxc/200`, ...
    pub id: ShortStr,
    /// `cpu_current`, `cpu_max`, `mem_used`, `mem_total`, ...
    pub metric: ShortStr,
    pub value: f64,
}

/// Longest text a [`ShortStr`] keeps inline.
const SHORT_STR_INLINE: usize = 30;

/// An immutable string stored inline up to 30 bytes (metric ids and names are all shorter),
/// on the heap beyond. Reads like a `&str` (`Deref`) and compares with `&str` and `String`.
#[derive(Clone)]
pub struct ShortStr(ShortRepr);

#[derive(Clone)]
enum ShortRepr {
    Inline {
        len: u8,
        bytes: [u8; SHORT_STR_INLINE],
    },
    Heap(Box<str>),
}

impl ShortStr {
    pub fn new(text: &str) -> ShortStr {
        if text.len() <= SHORT_STR_INLINE {
            let mut bytes = [0u8; SHORT_STR_INLINE];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            ShortStr(ShortRepr::Inline {
                len: text.len() as u8,
                bytes,
            })
        } else {
            ShortStr(ShortRepr::Heap(text.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Always a whole `&str` copied in `new`, so valid UTF-8.
            ShortRepr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            ShortRepr::Heap(text) => text,
        }
    }
}

impl std::ops::Deref for ShortStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ShortStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ShortStr {
    fn from(text: &str) -> ShortStr {
        ShortStr::new(text)
    }
}

impl std::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, other: &ShortStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortStr {}

impl std::hash::Hash for ShortStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ShortStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

/// One point of `rrddata` (60 s average or max). Fields absent where unknown.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RrdPoint {
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub time: Option<u64>,
    /// Fraction of `maxcpu`.
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub maxcpu: Option<f64>,
    /// Bytes in use.
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub mem: Option<f64>,
    /// Bytes the VM had.
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub maxmem: Option<f64>,
    /// Bytes as the host sees them (PVE 9).
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub memhost: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeframe {
    Hour,
    Day,
    Week,
}

impl Timeframe {
    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::Hour => "hour",
            Timeframe::Day => "day",
            Timeframe::Week => "week",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consolidation {
    Average,
    Max,
}

impl Consolidation {
    pub fn as_str(self) -> &'static str {
        match self {
            Consolidation::Average => "AVERAGE",
            Consolidation::Max => "MAX",
        }
    }
}

/// `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeStatus {
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default)]
    pub cpuinfo: Option<CpuInfo>,
    #[serde(default)]
    pub memory: Option<NodeMemory>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CpuInfo {
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub cpus: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeMemory {
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub used: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub free: Option<u64>,
}

/// A config's digest as Proxmox gives it (never empty). Every config write needs one, so
/// that a concurrent edit makes the write fail instead of being overwritten: a write cannot
/// be built without a digest read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDigest(String);

impl ConfigDigest {
    /// A digest from the server's text; `None` when it is empty.
    pub fn from_server(text: &str) -> Option<ConfigDigest> {
        let text = text.trim();
        (!text.is_empty()).then(|| ConfigDigest(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ConfigDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ConfigDigest::from_server(&text)
            .ok_or_else(|| serde::de::Error::custom("the config's digest is empty"))
    }
}

/// The keys of a VM config that pvescale reads (`config?current=1`). A config without a
/// digest does not parse: nothing is ever written on a config that was not read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VmConfig {
    pub digest: ConfigDigest,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub vcpus: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub cores: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub sockets: Option<u64>,
    /// MiB; an integer on PVE 8.0, `"[current=]N"` since 8.1.
    #[serde(default, deserialize_with = "de_memory")]
    pub memory: Option<u64>,
    /// MiB; 0 = no balloon device; absent = a balloon device without a minimum.
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub balloon: Option<u64>,
    #[serde(default, deserialize_with = "de_flag")]
    pub numa: bool,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub hotplug: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "de_flag")]
    pub template: bool,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub tags: Option<String>,
    /// The guest OS type (`l26`, `win11`, `w2k8`, ...).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub ostype: Option<String>,
    /// The QEMU guest agent property string (`1`, `enabled=1,fstrim_cloned_disks=1`, ...).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub agent: Option<String>,
    /// A container's CPU time quota in CPUs (`cpulimit`; 0 or absent: none).
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub cpulimit: Option<f64>,
}

impl VmConfig {
    /// A Windows guest, as qemu-server's `windows_version` tells (`win*`, `w2k`, `w2k3`,
    /// `w2k8`, `wxp`, `wvista`): it takes vCPUs and memory live but never gives them back.
    pub fn is_windows(&self) -> bool {
        self.ostype.as_deref().is_some_and(is_windows_ostype)
    }

    /// The guest agent is enabled (`agent: 1` or `enabled=1`; `enabled` defaults to 0, so
    /// `type=virtio` alone is off).
    pub fn agent_enabled(&self) -> bool {
        let Some(agent) = self.agent.as_deref() else {
            return false;
        };
        agent
            .split(',')
            .map(str::trim)
            .any(|item| match item.split_once('=') {
                None => item == "1",
                Some((key, value)) => key == "enabled" && value == "1",
            })
    }

    /// Proxmox's defaults when the key is absent.
    pub fn sockets(&self) -> u64 {
        self.sockets.unwrap_or(1).max(1)
    }

    pub fn cores(&self) -> u64 {
        self.cores.unwrap_or(1).max(1)
    }

    /// Largest `vcpus` that can be set live: sockets × cores.
    pub fn max_vcpus(&self) -> u64 {
        self.sockets() * self.cores()
    }

    /// vCPUs the VM has now (`vcpus`, default sockets × cores).
    pub fn vcpus(&self) -> u64 {
        self.vcpus.filter(|v| *v > 0).unwrap_or(self.max_vcpus())
    }

    /// The hotplug list with Proxmox's rules (qemu-server `parse_hotplug_features`, items
    /// split like pve-common's `split_list`: on `,`, `;` and whitespace): absent or `1` =
    /// `network,disk,usb`; `0` = none.
    pub fn hotplug_features(&self) -> Vec<String> {
        match self.hotplug.as_deref().map(str::trim) {
            None | Some("1") => vec!["network".into(), "disk".into(), "usb".into()],
            Some("0") | Some("") => Vec::new(),
            Some(list) => list
                .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                .map(|f| f.to_lowercase())
                .filter(|f| !f.is_empty())
                .collect(),
        }
    }

    pub fn cpu_hotplug(&self) -> bool {
        self.hotplug_features().iter().any(|f| f == "cpu")
    }

    pub fn memory_hotplug(&self) -> bool {
        self.hotplug_features().iter().any(|f| f == "memory")
    }
}

/// The part of `GET .../status/current` pvescale uses: whether the guest reports balloon
/// statistics (then `mem` is what the guest uses, not a host-side estimate).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VmCurrentStatus {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub ballooninfo: Option<BalloonInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct BalloonInfo {
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub free_mem: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub total_mem: Option<u64>,
}

impl VmCurrentStatus {
    /// The guest's balloon driver reports free and total memory.
    pub fn has_guest_memory_stats(&self) -> bool {
        self.ballooninfo
            .as_ref()
            .is_some_and(|b| b.free_mem.is_some() && b.total_mem.is_some_and(|t| t > 0))
    }
}

/// The part of a container's `status/current` pvescale reads: its own cgroup's pressure
/// (PVE 9; the kernel's avg10, in percent).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CtCurrentStatus {
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub pressurecpusome: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub pressurememorysome: Option<f64>,
}

/// A row of `GET .../pending`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PendingItem {
    pub key: String,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub value: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub pending: Option<String>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub delete: Option<u64>,
}

impl PendingItem {
    /// A change waits for the next cold start.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some() || self.delete.is_some_and(|d| d > 0)
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskStatus {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub exitstatus: Option<String>,
}

impl TaskStatus {
    pub fn is_running(&self) -> bool {
        self.status != "stopped"
    }

    pub fn succeeded(&self) -> bool {
        !self.is_running() && self.exitstatus.as_deref().is_some_and(task_exit_succeeded)
    }
}

/// A task's exit status counts as success when it is `OK` or `WARNINGS: n` (pve-common
/// src/PVE/UPID.pm `status_is_error`, `normalize_status_type`).
fn task_exit_succeeded(exit: &str) -> bool {
    exit == "OK" || exit.starts_with("WARNINGS")
}

// ---- lenient field parsers -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(untagged)]
enum Loose {
    Bool(bool),
    Int(u64),
    Signed(i64),
    Float(f64),
    Text(String),
}

pub(crate) fn de_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Option::<Loose>::deserialize(d)? {
        Some(Loose::Int(v)) => Some(v as f64),
        Some(Loose::Signed(v)) => Some(v as f64),
        Some(Loose::Float(v)) if v.is_finite() => Some(v),
        Some(Loose::Text(t)) => t.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
        _ => None,
    })
}

pub(crate) fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Loose>::deserialize(d)? {
        Some(Loose::Int(v)) => Some(v),
        Some(Loose::Float(v)) if (0.0..1.8e19).contains(&v) => Some(v as u64),
        Some(Loose::Text(t)) => t.trim().parse::<u64>().ok(),
        _ => None,
    })
}

/// Booleans arrive as `true`, `1`, or `"1"`.
pub(crate) fn de_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Option::<Loose>::deserialize(d)? {
        Some(Loose::Bool(b)) => b,
        Some(Loose::Int(v)) => v != 0,
        Some(Loose::Signed(v)) => v != 0,
        Some(Loose::Float(v)) => v != 0.0,
        Some(Loose::Text(t)) => matches!(t.trim(), "1" | "true" | "yes" | "on"),
        None => false,
    })
}

pub(crate) fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Loose>::deserialize(d)? {
        Some(Loose::Text(t)) => Some(t),
        Some(Loose::Int(v)) => Some(v.to_string()),
        Some(Loose::Signed(v)) => Some(v.to_string()),
        Some(Loose::Float(v)) => Some(v.to_string()),
        Some(Loose::Bool(b)) => Some(if b { "1" } else { "0" }.to_string()),
        None => None,
    })
}

/// `memory`: `4096`, `"4096"` or `"current=4096"` (with possibly more `,key=value`).
pub(crate) fn de_memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Loose>::deserialize(d)? {
        Some(Loose::Int(v)) => Some(v),
        Some(Loose::Text(t)) => parse_memory_property(&t),
        _ => None,
    })
}

/// Parses the `[current=]N[,...]` memory property string.
pub fn parse_memory_property(text: &str) -> Option<u64> {
    text.split(',').find_map(|part| {
        let part = part.trim();
        let value = part.strip_prefix("current=").unwrap_or(part);
        if value.contains('=') {
            None
        } else {
            value.parse().ok()
        }
    })
}

/// What qemu-server's agent endpoints answer: `{"result": <the guest agent's answer>}`.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentAnswer<T> {
    pub result: T,
}

/// One vCPU as the guest sees it (QGA `guest-get-vcpus`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GuestVcpu {
    #[serde(rename = "logical-id", default)]
    pub logical_id: u64,
    #[serde(default, deserialize_with = "de_flag")]
    pub online: bool,
}

/// One memory block as the guest sees it (QGA `guest-get-memory-blocks`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GuestMemoryBlock {
    #[serde(rename = "phys-index", default)]
    pub phys_index: u64,
    #[serde(default, deserialize_with = "de_flag")]
    pub online: bool,
}

/// QGA `guest-get-memory-block-info`: the size of a memory block in bytes.
#[derive(Debug, Clone, Deserialize)]
pub struct GuestMemoryBlockInfo {
    pub size: u64,
}

/// qemu-server's `windows_version` is non-zero for these.
pub fn is_windows_ostype(ostype: &str) -> bool {
    matches!(ostype, "wxp" | "w2k" | "w2k3" | "w2k8" | "wvista")
        || ostype
            .strip_prefix("win")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config as the server sends it: always with a digest.
    fn config(json: &str) -> serde_json::Result<VmConfig> {
        let mut value: serde_json::Value = serde_json::from_str(json)?;
        value["digest"] = "0123abcd".into();
        serde_json::from_value(value)
    }

    #[test]
    fn windows_and_the_guest_agent_are_read_as_qemu_server_reads_them() {
        for (ostype, windows) in [
            ("win11", true),
            ("win7", true),
            ("w2k8", true),
            ("wxp", true),
            ("wvista", true),
            ("l26", false),
            ("win", false),
            ("solaris", false),
            ("other", false),
        ] {
            let c = config(&format!(r#"{{"ostype": "{ostype}"}}"#)).unwrap();
            assert_eq!(c.is_windows(), windows, "{ostype}");
        }
        assert!(!config("{}").unwrap().is_windows());
        for (agent, on) in [
            ("1", true),
            ("0", false),
            ("enabled=1,fstrim_cloned_disks=1", true),
            ("1,type=virtio", true),
            ("type=virtio", false),
            ("enabled=0", false),
        ] {
            let c = config(&format!(r#"{{"agent": "{agent}"}}"#)).unwrap();
            assert_eq!(c.agent_enabled(), on, "{agent}");
        }
        assert!(config(r#"{"agent": 1}"#).unwrap().agent_enabled());
        assert!(!config("{}").unwrap().agent_enabled());
    }

    #[test]
    fn a_config_without_a_digest_does_not_parse() {
        assert!(serde_json::from_str::<VmConfig>(r#"{"memory": 4096}"#).is_err());
        assert!(serde_json::from_str::<VmConfig>(r#"{"digest": " "}"#).is_err());
        let cfg: VmConfig = serde_json::from_str(r#"{"digest": "ab12"}"#).unwrap();
        assert_eq!(cfg.digest.as_str(), "ab12");
    }

    fn version(release: &str, version: &str) -> Version {
        Version {
            release: release.into(),
            version: version.into(),
            repoid: None,
        }
    }

    #[test]
    fn metrics_export_exists_since_8_2_5() {
        for (release, full, has) in [
            ("8.2", "8.2.4", false),
            ("8.2", "8.2.5", true),
            ("8.2", "8.2.10", true),
            ("8.1", "8.1.11", false),
            ("8.3", "8.3.0", true),
            ("9.0", "9.0.0~11", true),
            // The release alone does not tell which 8.2.
            ("8.2", "", false),
            ("8.4", "", true),
            ("", "8.2.5", true),
            ("", "", false),
        ] {
            assert_eq!(
                version(release, full).has_metrics_export(),
                has,
                "{release} / {full}"
            );
        }
        assert_eq!(version("8.2", "8.2.5").major_minor(), Some((8, 2)));
        assert_eq!(version("", "9.1.2").major_minor(), Some((9, 1)));
    }

    #[test]
    fn memory_is_parsed_in_every_version_format() {
        let v80: VmConfig = config(r#"{"memory": 4096}"#).unwrap();
        let v81: VmConfig = config(r#"{"memory": "4096"}"#).unwrap();
        let v84: VmConfig = config(r#"{"memory": "current=4096"}"#).unwrap();
        let v91: VmConfig = config(r#"{"memory": "current=4096,extra=1"}"#).unwrap();
        for cfg in [v80, v81, v84, v91] {
            assert_eq!(cfg.memory, Some(4096));
        }
    }

    #[test]
    fn hotplug_defaults_follow_proxmox() {
        let absent: VmConfig = config("{}").unwrap();
        assert!(!absent.cpu_hotplug());
        let one: VmConfig = config(r#"{"hotplug": "1"}"#).unwrap();
        assert_eq!(one.hotplug_features(), vec!["network", "disk", "usb"]);
        let zero: VmConfig = config(r#"{"hotplug": 0}"#).unwrap();
        assert!(zero.hotplug_features().is_empty());
        let full: VmConfig = config(r#"{"hotplug": "network,disk,usb,cpu,memory"}"#).unwrap();
        assert!(full.cpu_hotplug() && full.memory_hotplug());
        // Proxmox splits the list on `,`, `;` and whitespace alike.
        for list in ["disk;cpu;memory", "disk  cpu memory", "disk, cpu ;memory"] {
            let cfg: VmConfig = config(&format!(r#"{{"hotplug": "{list}"}}"#)).unwrap();
            assert!(cfg.cpu_hotplug() && cfg.memory_hotplug(), "{list}");
        }
    }

    #[test]
    fn vcpus_default_to_sockets_times_cores() {
        let cfg: VmConfig = config(r#"{"sockets": 2, "cores": 4}"#).unwrap();
        assert_eq!((cfg.vcpus(), cfg.max_vcpus()), (8, 8));
        let cfg: VmConfig = config(r#"{"sockets": "2", "cores": 4, "vcpus": 3}"#).unwrap();
        assert_eq!((cfg.vcpus(), cfg.max_vcpus()), (3, 8));
    }

    #[test]
    fn missing_metrics_are_none_not_zero() {
        let rows: Vec<ResourceRow> = serde_json::from_str(
            r#"[{"type":"qemu","vmid":101,"node":"pve1","status":"unknown","tags":"a;B"},
                {"type":"lxc","vmid":200,"node":"pve1"},
                {"type":"node","node":"pve1","status":"online"},
                {"type":"storage","id":"storage/pve1/local"}]"#,
        )
        .unwrap();
        let res = Resources::from_rows(rows);
        assert_eq!(res.vms.len(), 2);
        assert_eq!(res.vms[0].kind, GuestKind::Vm);
        assert_eq!((res.vms[1].kind, res.vms[1].vmid), (GuestKind::Ct, 200));
        assert_eq!(res.vms[0].cpu, None);
        assert_eq!(res.vms[0].mem, None);
        assert_eq!(res.vms[0].tags, vec!["a", "b"]);
        assert_eq!(res.nodes[0].cpu, None);
    }

    #[test]
    fn short_strings_read_and_compare_like_str() {
        let long = "node/a-node-name-that-is-longer-than-thirty-bytes";
        for text in ["", "qemu/101", "cpu_current", "x".repeat(30).as_str(), long] {
            let short = ShortStr::new(text);
            assert_eq!(short.as_str(), text);
            assert_eq!(short, text);
            assert_eq!(short, text.to_string());
            assert_eq!(format!("{short:?}"), format!("{text:?}"));
            assert_eq!(short.clone(), ShortStr::from(text));
        }
        assert_ne!(ShortStr::new("qemu/101"), "qemu/1010");
        assert_eq!(ShortStr::new("qemu/101").strip_prefix("qemu/"), Some("101"));
        assert_eq!(ShortStr::new("ü/ß").len(), "ü/ß".len());
    }

    #[test]
    fn task_success_includes_warnings() {
        let ok = TaskStatus {
            status: "stopped".into(),
            exitstatus: Some("WARNINGS: 1".into()),
        };
        let failed = TaskStatus {
            status: "stopped".into(),
            exitstatus: Some("hotplug problem".into()),
        };
        let running = TaskStatus {
            status: "running".into(),
            exitstatus: None,
        };
        assert!(ok.succeeded() && !failed.succeeded() && !running.succeeded());
    }
}
