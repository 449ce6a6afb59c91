//! Replacing a file so that a crash at any point leaves either the old or the new content:
//! a temporary file in the same directory, fsync, rename over the target, fsync of the
//! directory. Used by the state file and the metrics file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically, with file mode `mode`.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    prepare(path, bytes, mode)?.commit()
}

/// The first half of [`replace`]: the temporary file, written and fsynced, `path` untouched.
/// Dropping the result without [`Prepared::commit`] is what a crash before the rename looks
/// like (the temporary file stays; the next write replaces it).
pub fn prepare(path: &Path, bytes: &[u8], mode: u32) -> Result<Prepared> {
    let temp = temp_path(path);
    let written = (|| -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        // A temporary file left by a crash may have been created with other permissions.
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

/// `dir/.name.tmp` for `dir/name`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}.tmp"))
}
