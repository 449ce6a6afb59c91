//! The state's store: a versioned JSON file, written atomically, guarded by an exclusive
//! lock beside it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::model::{STATE_VERSION, State};
use crate::atomic_file;

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "pvescale.lock";

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
    use crate::policy::{Direction, MemorySource, Resource};
    use crate::state::model::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

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
