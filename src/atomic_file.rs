//! Replacing a file so that a crash at any point leaves either the old or the new content:
//! a temporary file in the same directory, fsync, rename over the target, fsync of the
//! directory. Used by the state file and the metrics file.
//!
//! The temporary file is created exclusively (`O_EXCL`, which also refuses a symbolic link)
//! under a name nobody can guess in advance, and its mode is set through its descriptor, so
//! that a directory another user can write (node_exporter's) cannot turn the write into one
//! on some other file. The rename replaces the name, never what a link there points at.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically, with file mode `mode`.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    prepare(path, bytes, mode)?.commit()
}

/// The first half of [`replace`]: the temporary file, written and fsynced, `path` untouched.
/// Dropping the result without [`Prepared::commit`] is what a crash before the rename looks
/// like (the temporary file stays; the next write removes it).
pub fn prepare(path: &Path, bytes: &[u8], mode: u32) -> Result<Prepared> {
    remove_leftovers(path);
    let (mut file, temp) = create_temp(path, mode)?;
    let written = (|| -> Result<()> {
        // The mode given at creation is cut by the umask; set it exactly, on the descriptor.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting permissions of {}", temp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", temp.display()))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(Prepared {
        temp,
        target: path.to_path_buf(),
    })
}

/// A new file `dir/.name.<random>.tmp`, created exclusively (a name already there, even a
/// dangling link, is an error and another name is tried).
fn create_temp(path: &Path, mode: u32) -> Result<(File, PathBuf)> {
    let mut last = None;
    for _ in 0..16 {
        let temp = temp_path(path, random_tag());
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&temp)
        {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((e, temp)),
            Err(e) => return Err(e).with_context(|| format!("creating {}", temp.display())),
        }
    }
    let (e, temp) = last.expect("the loop ran");
    Err(e).with_context(|| format!("creating {} (and 15 other names)", temp.display()))
}

/// 64 bits nobody else can predict: std's `RandomState` is keyed from the OS's random
/// source, so its hash of the time and pid is unknown to anyone outside this process.
fn random_tag() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(t.as_nanos());
    }
    hasher.finish()
}

/// Removes temporary files of `path` that a crash left behind: only regular files of ours
/// (a directory shared with another user may hold files of that user with such names).
fn remove_leftovers(path: &Path) {
    let dir = parent_dir(path);
    let Some(prefix) = temp_prefix(path) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let uid = crate::fs_guard::Guard::current().uid();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(&prefix) && name.ends_with(".tmp")) {
            continue;
        }
        // DirEntry::metadata does not follow links.
        if entry
            .metadata()
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == uid)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A file written to its temporary name, not yet renamed into place.
#[derive(Debug)]
#[must_use = "the file is not replaced until commit()"]
pub struct Prepared {
    temp: PathBuf,
    target: PathBuf,
}

impl Prepared {
    /// The temporary file.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Renames the temporary file over the target and fsyncs the directory.
    pub fn commit(self) -> Result<()> {
        fs::rename(&self.temp, &self.target).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temp.display(),
                self.target.display()
            )
        })?;
        let dir = parent_dir(&self.target);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))
    }
}

/// The directory of `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.name.` for `dir/name`: how the temporary files of `path` begin.
fn temp_prefix(path: &Path) -> Option<String> {
    path.file_name()
        .map(|n| format!(".{}.", n.to_string_lossy()))
}

/// `dir/.name.<tag in hex>.tmp` for `dir/name`.
fn temp_path(path: &Path, tag: u64) -> PathBuf {
    let prefix = temp_prefix(path).unwrap_or_else(|| ".".to_string());
    parent_dir(path).join(format!("{prefix}{tag:016x}.tmp"))
}

/// The temporary files of `path` there are now (for tests of crashes and leftovers).
pub fn temp_files(path: &Path) -> Vec<PathBuf> {
    let Some(prefix) = temp_prefix(path) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = fs::read_dir(parent_dir(path))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(&prefix) && name.ends_with(".tmp")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn temp_names_differ_and_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let a = prepare(&path, b"a", 0o600).unwrap();
        let b = prepare(&path, b"b", 0o600).unwrap();
        assert_ne!(a.temp_path(), b.temp_path());
        assert!(
            a.temp_path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".x.json.")
        );
        b.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"b");
    }

    #[test]
    fn a_planted_symlink_at_a_temp_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        // Links at every name of the old scheme, and at the name the next temp will have
        // (we cannot know it: that is the point; plant many guesses instead).
        symlink(&victim, dir.path().join(".x.json.tmp")).unwrap();
        for tag in 0..64u64 {
            symlink(&victim, temp_path(&path, tag)).unwrap();
        }
        replace(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the victim is not re-moded");
        // The links are someone else's business in a shared directory: left alone.
        assert!(fs::symlink_metadata(temp_path(&path, 3)).is_ok());
    }

    #[test]
    fn a_link_at_the_target_name_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        // A link where the target is: the rename replaces the link itself.
        symlink(&victim, &path).unwrap();
        replace(&path, b"new", 0o600).unwrap();
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let crashed = prepare(&path, b"half", 0o600).unwrap();
        let left = crashed.temp_path().to_path_buf();
        drop(crashed);
        assert_eq!(temp_files(&path), vec![left]);
        replace(&path, b"whole", 0o600).unwrap();
        assert!(temp_files(&path).is_empty());
        assert_eq!(fs::read(&path).unwrap(), b"whole");
    }

    #[test]
    fn mode_is_exact_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        replace(&path, b"a 1\n", 0o644).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }
}
