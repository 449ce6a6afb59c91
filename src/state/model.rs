//! The state's model: what pvescale carries from one run to the next, and what the policy
//! reads and returns. Pure data (no file, no lock: see `store`).
//!
//! Per cluster and VMID it holds, per resource, since when utilisation has been above or below
//! the thresholds, the last change, the back-off after a refused change and the last error;
//! plus what a run learned from the VM's config, and the last notification times.
//!
//! Times are unix seconds (`u64`) everywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::guest::GuestKind;
pub use crate::policy::ConfigSignature;
use crate::policy::{Direction, MemorySource, Resource};

/// Version of the state file's schema. A file with a higher version is set aside.
pub const STATE_VERSION: u32 = 1;

/// Entries of VMs not seen for this long are pruned (7 days).
pub const PRUNE_AFTER_SECS: u64 = 7 * 24 * 3600;

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Cluster name (from the config) → VMID → state of that VM.
    #[serde(default)]
    pub clusters: BTreeMap<String, BTreeMap<u32, VmState>>,
    #[serde(default)]
    pub notifications: Notifications,
    /// Cluster name → since when `cluster/metrics/export` is known to be unavailable there
    /// (older PVE, or no Sys.Audit), so that runs go straight to `rrddata` and only probe the
    /// export again now and then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics_export_unavailable: BTreeMap<String, u64>,
}

/// What notifications last went out, for deduplication and rate limiting (see `notify`).
/// Every field has a default, so state files from before a field existed still load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Notifications {
    /// Deduplication key (chosen by the notifier) → when it was last sent.
    pub last_sent: BTreeMap<String, u64>,
    /// Conditions that hold (a VM blocked, a VM or cluster failing), by key chosen by the
    /// notifier: told once, until they change; a failure that clears is told as recovered.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, NotifyCondition>,
    /// When messages went out in the last hour (for the hourly cap).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sent_at: Vec<u64>,
    /// Events dropped by the hourly cap since the last message; the next message says so.
    #[serde(skip_serializing_if = "is_zero")]
    pub held_back: u64,
    /// Channel id (`email`, `gotify`, `webhook:<name>`) → when a message last reached it.
    /// Kept through quiet runs and not pruned by age (a channel silent for long is the point);
    /// a channel no longer configured is forgotten by the notifier.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub last_success: BTreeMap<String, u64>,
}

/// A condition the notifier tracks between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyCondition {
    /// Since when it holds.
    pub since: u64,
    pub cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What identifies it: a different one is a new condition.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub identity: String,
    /// The last message about it (an error, a reason).
    pub text: String,
    /// Whether a message about it went out.
    pub notified: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Everything remembered about one VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmState {
    /// Last run that saw this VM in `/cluster/resources` (whatever its status).
    pub last_seen: u64,
    pub cpu: ResourceState,
    pub memory: ResourceState,
    /// What a run learned from the VM's config, so that later runs need not read it again.
    /// The run decides when it is stale (see `learned_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_config: Option<KnownConfig>,
    /// A config write that was started and whose outcome is not settled yet (the run was
    /// killed, or its task did not finish in time). The next run reads the VM, reverts
    /// whatever of it was left pending and records what did go live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    /// Where the VM's memory figure comes from, when learned without reading the config
    /// (one `status/current` call), so that later runs need not ask again for a while.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_source: Option<LearnedSource>,
    /// The host's memory maximum for this VM (MiB), learned from Proxmox's refusal of a
    /// larger size (qemu-server `get_max_mem`: 2^(physical address bits − 21)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_max_memory_mib: Option<u64>,
    /// The newest metrics sample of this VM any run has seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_at: Option<u64>,
    /// Since when a running VM that never had a sample has been without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_data_since: Option<u64>,
}

/// A memory source and when it was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedSource {
    pub source: MemorySource,
    pub at: u64,
}

/// The config keys pvescale writes, in the order a write sends them: `balloon` before
/// `memory` (a lower floor must not exceed the new memory). Pending changes to them made by
/// someone else make pvescale leave the VM alone.
pub const MANAGED_KEYS: [&str; 3] = ["balloon", "memory", "vcpus"];

/// The config key that sizes a resource.
pub fn key_of(resource: Resource) -> &'static str {
    match resource {
        Resource::Cpu => "vcpus",
        Resource::Memory => "memory",
    }
}

/// One config write: the new values (`None` = unchanged). The one model of a write, for the
/// write protocol and for the record of a write in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigWrite {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balloon_mib: Option<u64>,
}

impl ConfigWrite {
    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }

    /// The value this write sets for `key` (one of [`MANAGED_KEYS`]).
    pub fn value_of(&self, key: &str) -> Option<u64> {
        match key {
            // `cores` is the CPU key of a container (see [`GuestKind::cpu_key`]).
            "vcpus" | "cores" => self.vcpus,
            "memory" => self.memory_mib,
            "balloon" => self.balloon_mib,
            _ => None,
        }
    }

    /// The keys it writes, in [`MANAGED_KEYS`] order.
    pub fn keys(&self) -> Vec<&'static str> {
        MANAGED_KEYS
            .into_iter()
            .filter(|key| self.value_of(key).is_some())
            .collect()
    }

    /// The form parameters of the write (without the digest, which the client adds).
    pub fn params(&self) -> Vec<(&'static str, String)> {
        MANAGED_KEYS
            .into_iter()
            .filter_map(|key| Some((key, self.value_of(key)?.to_string())))
            .collect()
    }

    /// The keys it writes on a guest of this kind (a container's CPU key is `cores`; it has
    /// no balloon).
    pub fn keys_for(&self, kind: GuestKind) -> Vec<&'static str> {
        self.keys()
            .into_iter()
            .filter(|key| kind == GuestKind::Vm || *key != "balloon")
            .map(|key| if key == "vcpus" { kind.cpu_key() } else { key })
            .collect()
    }

    /// The form parameters of the write on a guest of this kind.
    pub fn params_for(&self, kind: GuestKind) -> Vec<(&'static str, String)> {
        self.keys_for(kind)
            .into_iter()
            .filter_map(|key| Some((key, self.value_of(key)?.to_string())))
            .collect()
    }
}

/// A config write that was started and whose outcome is not settled yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InFlight {
    /// When the write was started.
    pub at: u64,
    /// What was written.
    #[serde(flatten)]
    pub write: ConfigWrite,
    /// The sizes before the write, to tell what went live.
    pub vcpus_before: u64,
    pub memory_mib_before: u64,
    /// The balloon floor before the write, to put back if memory did not go live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balloon_mib_before: Option<u64>,
}

/// The state of one resource of one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceState {
    /// Since when utilisation has been above `high` without a break.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub above_since: Option<u64>,
    /// Since when utilisation has been below `low` without a break.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below_since: Option<u64>,
    /// Last time a known utilisation figure was evaluated; a longer gap restarts the breach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<u64>,
    /// The last change pvescale made to this resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_change: Option<Change>,
    /// No scale-up attempt until then (the VM refused one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_up: Option<Backoff>,
    /// No scale-down attempt until then (the VM refused one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_down: Option<Backoff>,
    /// The last failure about this resource (kept for `status`, even after a later success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorRecord>,
    /// A grow of a saturated VM whose samples are watched for the sign of a guest that left
    /// the added vCPUs offline (no guest agent to ask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_watch: Option<OnlineWatch>,
}

/// Watching a grow from `from` to `to` vCPUs: a guest that brought none of the added ones
/// online reads pinned at `from / to`, as flat as it read 100 % before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineWatch {
    pub from: u64,
    pub to: u64,
    /// The newest sample looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<u64>,
    /// Since when every sample has read pinned at `from / to` (the start of the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_since: Option<u64>,
    /// How many samples read pinned.
    #[serde(default)]
    pub pinned_samples: u32,
}

/// A change that was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub at: u64,
    pub direction: Direction,
    /// Size before (vCPUs or MiB).
    pub from: u64,
    /// Size after (vCPUs or MiB).
    pub to: u64,
}

/// A back-off after the VM refused a change in one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// When the refusal happened.
    pub since: u64,
    /// No new attempt before this time...
    pub until: u64,
    /// ...unless the VM's config differs from this one.
    pub signature: ConfigSignature,
    /// What the VM or the server said.
    pub message: String,
}

/// A failure, with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub at: u64,
    pub message: String,
}

/// What a run learned from the VM's config (`config?current=1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownConfig {
    /// sockets × cores: the most vCPUs the VM can have live.
    pub max_vcpus: u32,
    /// `cpu` is in `hotplug`.
    pub cpu_hotplug: bool,
    /// `memory` is in `hotplug`.
    pub memory_hotplug: bool,
    /// `numa: 1`.
    pub numa: bool,
    /// `balloon` (MiB; 0 = no balloon device); `None` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon_mib: Option<u64>,
    /// Where the VM's memory figure comes from.
    pub memory_source: MemorySource,
    /// A Windows guest (grow only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub windows: bool,
    /// The QEMU guest agent is enabled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest_agent: bool,
    /// The config's digest when it was read.
    pub digest: String,
    /// When it was read.
    pub learned_at: u64,
}

impl ResourceState {
    /// The back-off of one direction.
    pub fn backoff(&self, direction: Direction) -> Option<&Backoff> {
        match direction {
            Direction::Up => self.backoff_up.as_ref(),
            Direction::Down => self.backoff_down.as_ref(),
        }
    }

    /// The back-off slot of one direction.
    pub fn backoff_mut(&mut self, direction: Direction) -> &mut Option<Backoff> {
        match direction {
            Direction::Up => &mut self.backoff_up,
            Direction::Down => &mut self.backoff_down,
        }
    }

    /// Forget both breach timers.
    pub fn reset_breach(&mut self) {
        self.above_since = None;
        self.below_since = None;
    }
}

impl VmState {
    /// The state of one resource.
    pub fn resource(&self, resource: Resource) -> &ResourceState {
        match resource {
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.memory,
        }
    }

    /// The state of one resource, to change it.
    pub fn resource_mut(&mut self, resource: Resource) -> &mut ResourceState {
        match resource {
            Resource::Cpu => &mut self.cpu,
            Resource::Memory => &mut self.memory,
        }
    }

    /// Record a change the apply step made (also a partial one: then `to` is what the VM has
    /// now). Starts the cooldowns and restarts the breach timers, since the old breach was
    /// measured against the old size. Ends a back-off in the same direction; the other
    /// back-offs go on, their signatures updated to the new size (a change of ours is not the
    /// config change that ends a back-off), without digest (our write changed it).
    pub fn record_change(
        &mut self,
        resource: Resource,
        direction: Direction,
        from: u64,
        to: u64,
        now: u64,
    ) {
        for rs in [&mut self.cpu, &mut self.memory] {
            for backoff in [&mut rs.backoff_up, &mut rs.backoff_down]
                .into_iter()
                .flatten()
            {
                match resource {
                    Resource::Cpu => {
                        backoff.signature.vcpus = u32::try_from(to).unwrap_or(u32::MAX);
                    }
                    Resource::Memory => backoff.signature.memory_mib = to,
                }
                backoff.signature.digest = None;
            }
        }
        let rs = self.resource_mut(resource);
        rs.last_change = Some(Change {
            at: now,
            direction,
            from,
            to,
        });
        rs.reset_breach();
        *rs.backoff_mut(direction) = None;
    }

    /// Record that the VM refused a change (left pending, unplug failed): no new attempt in
    /// that direction before `now + backoff`, unless the config's signature changes. The
    /// signature is that of the config after the revert (see [`ConfigSignature`]).
    pub fn record_refusal(
        &mut self,
        resource: Resource,
        direction: Direction,
        now: u64,
        backoff: Duration,
        signature: ConfigSignature,
        message: impl Into<String>,
    ) {
        let message = message.into();
        let rs = self.resource_mut(resource);
        rs.last_error = Some(ErrorRecord {
            at: now,
            message: message.clone(),
        });
        *rs.backoff_mut(direction) = Some(Backoff {
            since: now,
            until: now.saturating_add(backoff.as_secs()),
            signature,
            message,
        });
    }

    /// Record a failure that calls for no back-off (the server was unreachable, a concurrent
    /// edit, ...): it is only shown.
    pub fn record_error(&mut self, resource: Resource, now: u64, message: impl Into<String>) {
        self.resource_mut(resource).last_error = Some(ErrorRecord {
            at: now,
            message: message.into(),
        });
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            clusters: BTreeMap::new(),
            notifications: Notifications::default(),
            metrics_export_unavailable: BTreeMap::new(),
        }
    }
}

impl State {
    /// The state of one VM.
    pub fn vm(&self, cluster: &str, vmid: u32) -> Option<&VmState> {
        self.clusters.get(cluster).and_then(|vms| vms.get(&vmid))
    }

    /// The state of one VM, to change it.
    pub fn vm_mut(&mut self, cluster: &str, vmid: u32) -> Option<&mut VmState> {
        self.clusters
            .get_mut(cluster)
            .and_then(|vms| vms.get_mut(&vmid))
    }

    /// Store the state of one VM (typically the one `policy::decide` returned).
    pub fn set_vm(&mut self, cluster: &str, vmid: u32, vm: VmState) {
        self.clusters
            .entry(cluster.to_string())
            .or_default()
            .insert(vmid, vm);
    }

    /// Takes the configs `status` learned at `at` (and nothing else of its pass: its
    /// decisions must not move the runs' hysteresis) into VMs this state already has.
    /// Returns how many were taken.
    pub fn adopt_known_configs(&mut self, learned: &State, at: u64) -> usize {
        let mut adopted = 0;
        for (cluster, vms) in &learned.clusters {
            for (&vmid, vm) in vms {
                let Some(known) = vm.known_config.as_ref().filter(|k| k.learned_at == at) else {
                    continue;
                };
                if let Some(mine) = self.vm_mut(cluster, vmid)
                    && mine.known_config.as_ref().is_none_or(|k| k.learned_at < at)
                {
                    mine.known_config = Some(known.clone());
                    adopted += 1;
                }
            }
        }
        adopted
    }

    /// When each config write not settled yet was started, oldest first.
    pub fn unsettled_write_times(&self) -> Vec<u64> {
        let mut times: Vec<u64> = self
            .clusters
            .values()
            .flat_map(|vms| vms.values())
            .filter_map(|vm| vm.in_flight.as_ref().map(|w| w.at))
            .collect();
        times.sort_unstable();
        times
    }

    /// Drop VMs not seen for [`PRUNE_AFTER_SECS`], clusters left empty, and notification
    /// records as old. Returns how many VMs were dropped.
    pub fn prune(&mut self, now: u64) -> usize {
        let cutoff = now.saturating_sub(PRUNE_AFTER_SECS);
        let mut dropped = 0;
        for vms in self.clusters.values_mut() {
            let before = vms.len();
            vms.retain(|_, vm| vm.last_seen >= cutoff);
            dropped += before - vms.len();
        }
        self.clusters.retain(|_, vms| !vms.is_empty());
        self.notifications
            .last_sent
            .retain(|_, &mut at| at >= cutoff);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_flight_write_keeps_its_file_format() {
        // The state file of earlier versions has the written values beside `at`.
        let old = r#"{"at": 5, "vcpus": 4, "balloon_mib": 1024, "vcpus_before": 2, "memory_mib_before": 4096}"#;
        let in_flight: InFlight = serde_json::from_str(old).expect("old format loads");
        assert_eq!(in_flight.write.vcpus, Some(4));
        assert_eq!(in_flight.write.keys(), vec!["balloon", "vcpus"]);
        let json = serde_json::to_value(&in_flight).expect("serialises");
        assert_eq!(json["vcpus"], 4);
        assert_eq!(json["balloon_mib"], 1024);
        assert!(json.get("write").is_none(), "{json}");
    }

    fn known(at: u64) -> KnownConfig {
        KnownConfig {
            max_vcpus: 8,
            cpu_hotplug: true,
            memory_hotplug: true,
            numa: true,
            windows: false,
            guest_agent: false,
            balloon_mib: None,
            memory_source: MemorySource::Guest,
            digest: format!("d{at}"),
            learned_at: at,
        }
    }

    #[test]
    fn status_hands_on_only_the_configs_it_read_and_only_to_known_vms() {
        let mut saved = State::default();
        let mut mine = VmState {
            last_seen: 90,
            ..VmState::default()
        };
        mine.cpu.above_since = Some(80);
        saved.set_vm("lab", 101, mine.clone());
        saved.set_vm("lab", 102, mine.clone());
        let mut status = saved.clone();
        for vmid in [101, 102, 103] {
            let mut vm = mine.clone();
            // Status's own decisions must not reach the runs' state.
            vm.cpu.above_since = None;
            vm.known_config = Some(known(if vmid == 102 { 50 } else { 100 }));
            status.set_vm("lab", vmid, vm);
        }
        assert_eq!(saved.adopt_known_configs(&status, 100), 1);
        let vm = saved.vm("lab", 101).expect("101");
        assert_eq!(vm.known_config, Some(known(100)));
        assert_eq!(vm.cpu.above_since, Some(80));
        // 102's knowledge was not read by this status; 103 is not the runs' VM (yet).
        assert_eq!(
            saved.vm("lab", 102).and_then(|v| v.known_config.clone()),
            None
        );
        assert!(saved.vm("lab", 103).is_none());
    }

    #[test]
    fn a_state_from_before_last_success_loads_and_keeps_it_through_pruning() {
        let old = r#"{"version": 1, "clusters": {}, "notifications":
            {"last_sent": {"lab/101/scaled": 100}, "sent_at": [100]}}"#;
        let mut state: State = serde_json::from_str(old).expect("old state loads");
        assert!(state.notifications.last_success.is_empty());
        state
            .notifications
            .last_success
            .insert("webhook:ops".to_string(), 100);
        let text = serde_json::to_string(&state).expect("serialises");
        let mut back: State = serde_json::from_str(&text).expect("loads again");
        // A week later: the dedup record goes, the last success stays (its age is the alarm).
        back.prune(100 + PRUNE_AFTER_SECS + 1);
        assert!(back.notifications.last_sent.is_empty());
        assert_eq!(
            back.notifications.last_success.get("webhook:ops"),
            Some(&100)
        );
    }

    #[test]
    fn unsettled_writes_are_listed_oldest_first() {
        let mut state = State::default();
        assert!(state.unsettled_write_times().is_empty());
        for (vmid, at) in [(101, Some(300)), (102, None), (103, Some(200))] {
            let vm = VmState {
                in_flight: at.map(|at| InFlight {
                    at,
                    ..InFlight::default()
                }),
                ..VmState::default()
            };
            state.set_vm(if vmid == 103 { "other" } else { "lab" }, vmid, vm);
        }
        assert_eq!(state.unsettled_write_times(), vec![200, 300]);
    }

    #[test]
    fn a_write_lists_balloon_before_memory() {
        let write = ConfigWrite {
            vcpus: Some(4),
            memory_mib: Some(2048),
            balloon_mib: Some(1024),
        };
        let names: Vec<&str> = write.params().iter().map(|(k, _)| *k).collect();
        assert_eq!(names, vec!["balloon", "memory", "vcpus"]);
    }
}
