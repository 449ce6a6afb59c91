//! The state's store: a versioned JSON file, written atomically, guarded by an exclusive
//! lock beside it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::model::{STATE_VERSION, State};
use crate::atomic_file;
use crate::fs_guard::{DirProblem, FileError, Guard, Trust};

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
        // Under the lock (`load`) the state decides what the run does: only our own file.
        // Read-only commands may read the service user's file too.
        let trust = match set_aside_at {
            Some(_) => Trust::Mine,
            None => Trust::MineOrDirOwner,
        };
        Self::read_as(Guard::current(), path, set_aside_at, trust)
    }

    fn read_as(
        guard: Guard,
        path: &Path,
        set_aside_at: Option<u64>,
        trust: Trust,
    ) -> (State, Vec<String>) {
        let mut warnings = Vec::new();
        let problem = match guard.read_capped(path, MAX_STATE_BYTES, trust) {
            Ok(bytes) => match parse(&bytes) {
                Ok(state) => return (state, warnings),
                Err(problem) => format!("{} {problem}", path.display()),
            },
            Err(e) if e.is_not_found() => return (State::default(), warnings),
            Err(e @ FileError::TooLarge { .. }) => format!(
                "{e}, more than pvescale writes (about 1.4 MiB per 1,000 VMs); \
                 look at it, and remove it if it is not pvescale's"
            ),
            Err(e) if e.is_impostor() => e.to_string(),
            Err(e) => {
                warnings.push(format!(
                    "cannot read state file {e}; starting from an empty state"
                ));
                return (State::default(), warnings);
            }
        };
        let aside = match set_aside_at.map(|now| set_aside(path, now)) {
            Some(Ok(aside)) => format!("kept aside as {}", aside.display()),
            Some(Err(e)) => format!("could not be kept aside ({e})"),
            None => "left as it is (read-only command)".to_string(),
        };
        warnings.push(format!(
            "state file {problem}; it was {aside}; starting from an empty state"
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

/// Largest state file read. pvescale writes about 1.4 MiB per 1,000 VMs with every field
/// filled (changes, an error, a back-off, the known config; measured by `examples/bench_input`),
/// so 64 MiB holds some 45,000 VMs, more than a Proxmox VE cluster runs, and parsing it stays
/// within a few hundred MiB of memory. A larger file is not one pvescale wrote (or a link to
/// `/dev/zero`): it is set aside.
pub const MAX_STATE_BYTES: u64 = 64 * crate::units::MIB;

/// The state in `bytes`, parsed once; a file that does not parse as the current version is
/// looked at again only to say what is wrong with it.
fn parse(bytes: &[u8]) -> Result<State, String> {
    let full = serde_json::from_slice::<State>(bytes);
    if let Ok(state) = &full
        && state.version == STATE_VERSION
    {
        return full.map_err(|e| e.to_string());
    }
    #[derive(serde::Deserialize)]
    struct Header {
        version: Option<serde_json::Value>,
    }
    let version = match serde_json::from_slice::<Header>(bytes) {
        Err(e) if e.is_syntax() || e.is_eof() => return Err(format!("is not valid JSON ({e})")),
        Err(_) => None,
        Ok(header) => header.version.as_ref().and_then(serde_json::Value::as_u64),
    };
    Err(match version {
        None => "has no schema version".to_string(),
        Some(v) if v > u64::from(STATE_VERSION) => format!(
            "was written by a newer pvescale (schema version {v}, this one knows {STATE_VERSION})"
        ),
        Some(v) if v < u64::from(STATE_VERSION) => {
            format!("has an unknown old schema version {v}")
        }
        Some(_) => match full {
            Err(e) => format!("does not match the schema ({e})"),
            Ok(_) => "does not match the schema".to_string(),
        },
    })
}

/// Rename `path` to `path.corrupt-<now>` (or `-<now>-N` if that exists).
fn set_aside(path: &Path, now: u64) -> io::Result<PathBuf> {
    let base = path.as_os_str().to_string_lossy().into_owned();
    for n in 0..100u32 {
        let candidate = if n == 0 {
            PathBuf::from(format!("{base}.corrupt-{now}"))
        } else {
            PathBuf::from(format!("{base}.corrupt-{now}-{n}"))
        };
        if fs::symlink_metadata(&candidate).is_err() {
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
    /// The state directory is not private: pvescale refuses to keep its decisions there.
    #[error(
        "refusing to use the state directory: {0}; pvescale keeps its decisions there, so \
         only the user it runs as may write it"
    )]
    UnsafeDir(DirProblem),
    /// The lock file is not a regular file of ours.
    #[error("cannot lock: {0}")]
    File(FileError),
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
    /// process (or another handle in this one) gives [`LockError::Held`]. The directory must
    /// be ours (or root's) and writable by nobody else ([`Guard::private_dir_problem`]), and
    /// the lock file a regular file of ours (not followed if it is a link).
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        Self::acquire_as(Guard::current(), dir)
    }

    fn acquire_as(guard: Guard, dir: &Path) -> Result<StateLock, LockError> {
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
        if let Some(problem) = guard.private_dir_problem(dir).map_err(io_err)? {
            return Err(LockError::UnsafeDir(problem));
        }
        let file = guard
            .open(
                &path,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600),
                Trust::Mine,
            )
            .map_err(LockError::File)?;
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
    use crate::atomic_file::temp_files;
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
            windows: false,
            guest_agent: false,
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
        assert!(
            temp_files(&path).is_empty(),
            "the temporary file is renamed"
        );
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

        // The next save removes the leftover temporary file and succeeds.
        new.save(&path).unwrap();
        assert_eq!(State::load(&path, 1_000).0, new);
        assert!(temp_files(&path).is_empty());
    }

    #[test]
    fn crash_while_writing_the_temp_file_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = sample_state();
        old.save(&path).unwrap();
        // A half-written temporary file, as a crash mid-write leaves it.
        let crashed = old.write_temp(&path).unwrap();
        fs::write(crashed.temp_path(), b"{\"version\": 1, \"clus").unwrap();
        drop(crashed);
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

    fn victim(dir: &Path) -> PathBuf {
        let victim = dir.join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        victim
    }

    fn assert_untouched(victim: &Path) {
        assert_eq!(fs::read(victim).unwrap(), b"precious");
        let mode = fs::metadata(victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "not re-moded");
    }

    #[test]
    fn a_symlinked_state_is_not_followed_and_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let victim = victim(dir.path());
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        // peek: reported, left alone.
        let (state, warnings) = State::peek(&path);
        assert_eq!(state, State::default());
        assert!(warnings[0].contains("symbolic link"), "{warnings:?}");
        assert!(warnings[0].contains("left as it is"), "{warnings:?}");
        // load: the link itself is set aside; the save writes a regular file in its place.
        let (_, warnings) = State::load(&path, 7);
        assert!(warnings[0].contains("kept aside"), "{warnings:?}");
        let aside = dir.path().join("state.json.corrupt-7");
        assert!(
            fs::symlink_metadata(&aside)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        sample_state().save(&path).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_untouched(&victim);
    }

    #[test]
    fn a_fifo_as_state_does_not_hang_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        crate::fs_guard::tests::mkfifo(&path);
        // Nobody writes to the FIFO: a blocking open or read would hang here.
        let (state, warnings) = State::load(&path, 7);
        assert_eq!(state, State::default());
        assert!(warnings[0].contains("a FIFO"), "{warnings:?}");
        assert!(!path.exists(), "set aside");
    }

    #[test]
    fn an_oversized_state_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // Sparse: takes no disk, but a read without a cap would take its size in memory.
        let file = File::create(&path).unwrap();
        file.set_len(MAX_STATE_BYTES + 1).unwrap();
        let (state, warnings) = State::load(&path, 7);
        assert_eq!(state, State::default());
        assert!(warnings[0].contains("larger than 64 MiB"), "{warnings:?}");
        assert!(warnings[0].contains("remove it"), "{warnings:?}");
        assert!(dir.path().join("state.json.corrupt-7").exists());
    }

    #[test]
    fn another_users_state_is_not_acted_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        sample_state().save(&path).unwrap();
        let other = Guard::as_user(Guard::current().uid().wrapping_add(1));
        let (state, warnings) = State::read_as(other, &path, Some(7), Trust::Mine);
        assert_eq!(state, State::default());
        assert!(warnings[0].contains("belongs to user id"), "{warnings:?}");
        // Reading it (status, as another user) is fine when it is the directory owner's.
        let (state, warnings) = State::read_as(other, &path, None, Trust::MineOrDirOwner);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(state, State::default(), "the first read set it aside");
    }

    #[test]
    fn a_symlinked_or_foreign_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = victim(dir.path());
        let state_dir = dir.path().join("st");
        fs::create_dir(&state_dir).unwrap();
        std::os::unix::fs::symlink(&victim, state_dir.join(LOCK_FILE)).unwrap();
        match StateLock::acquire(&state_dir) {
            Err(LockError::File(FileError::Symlink { .. })) => {}
            other => panic!("expected a refused link, got {other:?}"),
        }
        assert_untouched(&victim);
        fs::remove_file(state_dir.join(LOCK_FILE)).unwrap();
        drop(StateLock::acquire(&state_dir).unwrap());
        let other = Guard::as_user(Guard::current().uid().wrapping_add(1));
        if Guard::current().uid() == 0 {
            // Root's directory is accepted for anyone; the lock file must still be theirs.
            match StateLock::acquire_as(other, &state_dir) {
                Err(LockError::File(FileError::Owner { .. })) => {}
                other => panic!("expected a foreign lock file, got {other:?}"),
            }
        } else {
            match StateLock::acquire_as(other, &state_dir) {
                Err(LockError::UnsafeDir(DirProblem::Owner { .. })) => {}
                other => panic!("expected a foreign directory, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o770, 0o777, 0o1777, 0o702] {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
            match StateLock::acquire(dir.path()) {
                Err(e @ LockError::UnsafeDir(DirProblem::Writable { .. })) => {
                    assert!(e.to_string().contains("chmod go-w"), "{e}")
                }
                other => panic!("mode {mode:o}: expected a refusal, got {other:?}"),
            }
        }
        assert!(
            !dir.path().join(LOCK_FILE).exists(),
            "nothing created there"
        );
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o750)).unwrap();
        assert!(StateLock::acquire(dir.path()).is_ok());
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
