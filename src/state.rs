//! The state pvescale carries from one run to the next: a versioned JSON file, written
//! atomically, guarded by an exclusive lock beside it.
//!
//! Per cluster and VMID it holds, per resource, since when utilisation has been above or below
//! the thresholds, the last change, the back-off after a refused change and the last error;
//! plus what a run learned from the VM's config, and the last notification times.
//!
//! Times are unix seconds (`u64`) everywhere.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::policy::{Direction, MemorySource, Resource};

/// Version of the state file's schema. A file with a higher version is set aside.
pub const STATE_VERSION: u32 = 1;

/// Entries of VMs not seen for this long are pruned (7 days).
pub const PRUNE_AFTER_SECS: u64 = 7 * 24 * 3600;

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "pvescale.lock";

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
}

/// A memory source and when it was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedSource {
    pub source: MemorySource,
    pub at: u64,
}

/// The values of a config write in progress (MiB and vCPUs; `None` = not part of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InFlight {
    /// When the write was started.
    pub at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balloon_mib: Option<u64>,
    /// The sizes before the write, to tell what went live.
    pub vcpus_before: u64,
    pub memory_mib_before: u64,
    /// The balloon floor before the write, to put back if memory did not go live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balloon_mib_before: Option<u64>,
}

impl InFlight {
    /// The config keys of the write.
    pub fn keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.vcpus.is_some() {
            keys.push("vcpus");
        }
        if self.memory_mib.is_some() {
            keys.push("memory");
        }
        if self.balloon_mib.is_some() {
            keys.push("balloon");
        }
        keys
    }
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

/// What identifies a VM's config for the back-off: a different signature clears it.
///
/// The sizes are known on every run (from `/cluster/resources`); the digest only when the run
/// read the config. Record the signature of the config as it is *after* the revert of a
/// refused change (re-read it), or with `digest: None`: a digest from before the revert would
/// differ from the next one and end the back-off at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSignature {
    pub vcpus: u32,
    pub memory_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl ConfigSignature {
    /// Whether `other` describes the same config: same sizes, and the same digest where both
    /// are known.
    pub fn same_config(&self, other: &ConfigSignature) -> bool {
        self.vcpus == other.vcpus
            && self.memory_mib == other.memory_mib
            && match (&self.digest, &other.digest) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
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
    /// Read the state file. Never fails: a missing file gives a fresh state; an unreadable
    /// one gives a fresh state and a warning; a corrupt one, or one written by a newer
    /// pvescale, is renamed aside to `<name>.corrupt-<unix time>` with a warning, and the
    /// state starts fresh. `now` (from [`crate::clock::now`]) names a set-aside file.
    pub fn load(path: &Path, now: u64) -> (State, Vec<String>) {
        Self::read(path, Some(now))
    }

    /// Like [`State::load`], but changes nothing on disk (for `--dry-run` and `status`):
    /// a bad file is reported and ignored, not set aside.
    pub fn peek(path: &Path) -> (State, Vec<String>) {
        Self::read(path, None)
    }

    fn read(path: &Path, set_aside_at: Option<u64>) -> (State, Vec<String>) {
        let mut warnings = Vec::new();
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (State::default(), warnings),
            Err(e) => {
                warnings.push(format!(
                    "cannot read state file {}: {e}; starting from an empty state",
                    path.display()
                ));
                return (State::default(), warnings);
            }
        };
        let problem = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(e) => format!("is not valid JSON ({e})"),
            Ok(value) => match value.get("version").and_then(serde_json::Value::as_u64) {
                None => "has no schema version".to_string(),
                Some(v) if v > u64::from(STATE_VERSION) => format!(
                    "was written by a newer pvescale (schema version {v}, this one knows {STATE_VERSION})"
                ),
                Some(v) if v < u64::from(STATE_VERSION) => {
                    format!("has an unknown old schema version {v}")
                }
                Some(_) => match serde_json::from_value::<State>(value) {
                    Ok(state) => return (state, warnings),
                    Err(e) => format!("does not match the schema ({e})"),
                },
            },
        };
        let aside = match set_aside_at.map(|now| set_aside(path, now)) {
            Some(Ok(aside)) => format!("kept aside as {}", aside.display()),
            Some(Err(e)) => format!("could not be kept aside ({e})"),
            None => "left as it is (read-only command)".to_string(),
        };
        warnings.push(format!(
            "state file {} {problem}; it was {aside}; starting from an empty state",
            path.display()
        ));
        (State::default(), warnings)
    }

    /// Write the state atomically: a temporary file in the same directory (mode 0600),
    /// fsync, rename over `path`, fsync of the directory. A crash at any point leaves either
    /// the old or the new file.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.write_temp(path)?.commit()
    }

    /// The first half of [`State::save`]: write and fsync the temporary file, without
    /// touching `path`. Dropping the result without [`PreparedSave::commit`] is what a crash
    /// before the rename looks like (the temporary file stays; the next save replaces it).
    pub fn write_temp(&self, path: &Path) -> Result<PreparedSave> {
        let mut json = serde_json::to_vec_pretty(self).context("serialising the state")?;
        json.push(b'\n');
        atomic_file::prepare(path, &json, 0o600)
    }

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

/// A state written to its temporary file, not yet renamed into place.
pub type PreparedSave = atomic_file::Prepared;

/// Rename `path` to `path.corrupt-<now>` (or `-<now>-N` if that exists).
fn set_aside(path: &Path, now: u64) -> io::Result<PathBuf> {
    let base = path.as_os_str().to_string_lossy().into_owned();
    for n in 0..100u32 {
        let candidate = if n == 0 {
            PathBuf::from(format!("{base}.corrupt-{now}"))
        } else {
            PathBuf::from(format!("{base}.corrupt-{now}-{n}"))
        };
        if !candidate.exists() {
            fs::rename(path, &candidate)?;
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "too many set-aside state files with the same time",
    ))
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds the lock (the run exits 75).
    #[error("another pvescale run holds the lock {}", path.display())]
    Held { path: PathBuf },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An exclusive lock on `pvescale.lock` in the state directory, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Take the lock without waiting; creates the directory (mode 0700) if needed. A lock held by another
    /// process (or another handle in this one) gives [`LockError::Held`].
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held { path }),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic_file::temp_path;
    use std::os::unix::fs::PermissionsExt;

    fn sample_state() -> State {
        let mut state = State::default();
        let mut vm = VmState {
            last_seen: 1_000,
            ..VmState::default()
        };
        vm.cpu.above_since = Some(900);
        vm.cpu.observed_at = Some(1_000);
        vm.record_change(Resource::Memory, Direction::Up, 2048, 4096, 950);
        vm.record_refusal(
            Resource::Memory,
            Direction::Down,
            990,
            Duration::from_secs(3600),
            ConfigSignature {
                vcpus: 2,
                memory_mib: 4096,
                digest: Some("abc".into()),
            },
            "hotplug problem - error unplug memory module",
        );
        vm.known_config = Some(KnownConfig {
            max_vcpus: 4,
            cpu_hotplug: true,
            memory_hotplug: true,
            numa: true,
            balloon_mib: Some(1024),
            memory_source: MemorySource::Guest,
            digest: "abc".into(),
            learned_at: 990,
        });
        state.set_vm("prod", 101, vm);
        state.set_vm(
            "prod",
            102,
            VmState {
                last_seen: 1_000,
                ..VmState::default()
            },
        );
        state
            .notifications
            .last_sent
            .insert("vm101:refused".into(), 995);
        state
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = sample_state();
        state.save(&path).unwrap();
        let (loaded, warnings) = State::load(&path, 1_000);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(loaded, state);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!temp_path(&path).exists(), "the temporary file is renamed");
    }

    #[test]
    fn missing_file_is_a_fresh_state_without_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (state, warnings) = State::load(&dir.path().join("state.json"), 1_000);
        assert_eq!(state, State::default());
        assert!(warnings.is_empty());
    }

    #[test]
    fn crash_before_rename_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = sample_state();
        old.save(&path).unwrap();

        let mut new = old.clone();
        new.set_vm("prod", 999, VmState::default());
        let prepared = new.write_temp(&path).unwrap();
        assert!(prepared.temp_path().exists());
        drop(prepared); // the crash: never renamed

        let (loaded, warnings) = State::load(&path, 1_000);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(loaded, old);

        // The next save overwrites the leftover temporary file and succeeds.
        new.save(&path).unwrap();
        assert_eq!(State::load(&path, 1_000).0, new);
    }

    #[test]
    fn crash_while_writing_the_temp_file_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = sample_state();
        old.save(&path).unwrap();
        // A half-written temporary file, as a crash mid-write leaves it.
        fs::write(temp_path(&path), b"{\"version\": 1, \"clus").unwrap();
        let (loaded, warnings) = State::load(&path, 1_000);
        assert!(warnings.is_empty());
        assert_eq!(loaded, old);
    }

    fn aside_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("state.json.corrupt-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn corrupt_file_is_kept_aside_and_the_state_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{\"version\": 1, \"clusters\": {\"prod\": {\"1").unwrap();
        let (state, warnings) = State::load(&path, 1_700_000_000);
        assert_eq!(state, State::default());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("not valid JSON"), "{}", warnings[0]);
        assert_eq!(
            aside_files(dir.path()),
            vec!["state.json.corrupt-1700000000"]
        );
        assert!(!path.exists());
        // The same second again does not overwrite the first copy.
        fs::write(&path, b"garbage").unwrap();
        let (_, warnings) = State::load(&path, 1_700_000_000);
        assert_eq!(warnings.len(), 1);
        assert_eq!(aside_files(dir.path()).len(), 2);
    }

    #[test]
    fn wrong_shape_is_corrupt_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            br#"{"version": 1, "clusters": {"prod": {"abc": 5}}}"#,
        )
        .unwrap();
        let (state, warnings) = State::load(&path, 1_000);
        assert_eq!(state, State::default());
        assert!(warnings[0].contains("does not match"), "{}", warnings[0]);
        assert_eq!(aside_files(dir.path()).len(), 1);
        fs::write(&path, br#"{"clusters": {}}"#).unwrap();
        let (_, warnings) = State::load(&path, 1_000);
        assert!(warnings[0].contains("no schema version"), "{}", warnings[0]);
    }

    #[test]
    fn newer_version_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, br#"{"version": 2, "clusters": {}}"#).unwrap();
        let (state, warnings) = State::load(&path, 42);
        assert_eq!(state, State::default());
        assert!(warnings[0].contains("newer pvescale"), "{}", warnings[0]);
        assert_eq!(aside_files(dir.path()), vec!["state.json.corrupt-42"]);
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            br#"{"version": 1, "extra": true, "clusters": {"c": {"7": {"last_seen": 5, "future": 1}}}}"#,
        )
        .unwrap();
        let (state, warnings) = State::load(&path, 1_000);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(state.vm("c", 7).map(|v| v.last_seen), Some(5));
    }

    #[test]
    fn prune_drops_vms_unseen_for_a_week() {
        let mut state = sample_state();
        let now = 1_000 + PRUNE_AFTER_SECS;
        state.set_vm(
            "old",
            5,
            VmState {
                last_seen: 999,
                ..VmState::default()
            },
        );
        if let Some(vm) = state.vm_mut("prod", 102) {
            vm.last_seen = now;
        }
        assert_eq!(state.prune(now), 1, "only the VM seen before the cutoff");
        assert!(state.vm("old", 5).is_none());
        assert!(!state.clusters.contains_key("old"), "empty cluster dropped");
        assert!(
            state.vm("prod", 101).is_some(),
            "seen exactly 7 days ago: kept"
        );
        assert_eq!(state.prune(now + 1), 1);
        assert!(state.vm("prod", 101).is_none());
        assert!(state.vm("prod", 102).is_some());
        assert!(state.notifications.last_sent.is_empty());
    }

    #[test]
    fn second_lock_holder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join(LOCK_FILE));
        match StateLock::acquire(dir.path()) {
            Err(LockError::Held { path }) => assert_eq!(path, dir.path().join(LOCK_FILE)),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        assert!(StateLock::acquire(dir.path()).is_ok(), "released on drop");
    }

    #[test]
    fn lock_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        let lock = StateLock::acquire(&sub).unwrap();
        assert!(lock.path().exists());
    }

    #[test]
    fn refusal_and_change_bookkeeping() {
        let mut vm = VmState::default();
        let sig = ConfigSignature {
            vcpus: 2,
            memory_mib: 4096,
            digest: None,
        };
        vm.record_refusal(
            Resource::Cpu,
            Direction::Down,
            100,
            Duration::from_secs(60),
            sig.clone(),
            "unplug refused",
        );
        let b = vm.cpu.backoff(Direction::Down).cloned().unwrap();
        assert_eq!((b.since, b.until), (100, 160));
        assert!(vm.cpu.backoff(Direction::Up).is_none());
        assert_eq!(vm.cpu.last_error.as_ref().map(|e| e.at), Some(100));
        vm.record_refusal(
            Resource::Memory,
            Direction::Down,
            100,
            Duration::from_secs(600),
            sig.clone(),
            "unplug refused",
        );
        vm.cpu.below_since = Some(50);
        vm.record_change(Resource::Cpu, Direction::Down, 2, 1, 200);
        let other = vm.memory.backoff(Direction::Down).cloned().unwrap();
        assert_eq!(
            other.until, 700,
            "our own change does not end another back-off"
        );
        assert_eq!(
            other.signature,
            ConfigSignature {
                vcpus: 1,
                memory_mib: 4096,
                digest: None
            }
        );
        assert!(vm.cpu.backoff(Direction::Down).is_none());
        assert_eq!(vm.cpu.below_since, None);
        assert_eq!(
            vm.cpu.last_change.as_ref().map(|c| (c.at, c.to)),
            Some((200, 1))
        );
        assert!(vm.memory.last_change.is_none());
    }

    #[test]
    fn signatures_compare_digests_only_when_both_known() {
        let a = ConfigSignature {
            vcpus: 2,
            memory_mib: 4096,
            digest: Some("x".into()),
        };
        let mut b = a.clone();
        b.digest = None;
        assert!(a.same_config(&b));
        b.digest = Some("y".into());
        assert!(!a.same_config(&b));
        b.digest = Some("x".into());
        b.memory_mib = 4608;
        assert!(!a.same_config(&b));
    }
}
