//! Opening files in the directories pvescale writes (the state directory, the metrics file's
//! directory) so that a name cannot make it act on something else: no symbolic link is
//! followed, nothing but a regular file is read or written (a FIFO would block, a device
//! would never end), and a file must belong to the user pvescale runs as. The checks are made
//! on the opened descriptor (fstat), not on the name, so the name cannot change in between.
//!
//! The `libc` crate gives the open flags `O_NOFOLLOW` and `O_NONBLOCK`, which std does not
//! name; it is already built for other crates, and only its constants are used (no unsafe).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Why a file in one of our directories was not used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error(
        "{} is a symbolic link; pvescale does not follow links in its directories (remove it)",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file but {kind} (remove it)", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{} belongs to user id {owner}, not to the user pvescale runs as ({us}) \
         (remove it, or run pvescale as its owner)",
        path.display()
    )]
    Owner { path: PathBuf, owner: u32, us: u32 },
    #[error("{} is larger than {} MiB", path.display(), cap / crate::units::MIB)]
    TooLarge { path: PathBuf, cap: u64 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::NotFound { .. })
    }

    /// The file is there but is not what pvescale writes (a link, a FIFO, someone else's,
    /// too large): it can be set aside, where an I/O error cannot.
    pub fn is_impostor(&self) -> bool {
        matches!(
            self,
            FileError::Symlink { .. }
                | FileError::NotRegular { .. }
                | FileError::Owner { .. }
                | FileError::TooLarge { .. }
        )
    }
}

/// Whose files are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Only files of the user pvescale runs as (anything it writes or acts on).
    Mine,
    /// Also files of the directory's owner: reading what the service user wrote, e.g. root
    /// running `pvescale history` on `/var/lib/pvescale` of the user `pvescale`.
    MineOrDirOwner,
}

/// What is wrong with a directory pvescale keeps files in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirProblem {
    #[error(
        "{} belongs to user id {owner}, not to the user pvescale runs as ({us}) or root",
        dir.display()
    )]
    Owner { dir: PathBuf, owner: u32, us: u32 },
    #[error(
        "{} is writable by {who} (mode {mode:04o}): others could replace the files in it \
         (chmod go-w {})",
        dir.display(),
        dir.display()
    )]
    Writable {
        dir: PathBuf,
        mode: u32,
        who: &'static str,
    },
}

/// The checks, as one user. [`Guard::current`] is the running process; tests use
/// [`Guard::as_user`] to see how another user's files are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    uid: u32,
}

impl Guard {
    /// As the effective user of this process.
    pub fn current() -> Guard {
        static UID: OnceLock<u32> = OnceLock::new();
        // Unknown (no /proc): a uid no file has, so that every owner check refuses.
        let uid = *UID.get_or_init(|| effective_uid().unwrap_or(u32::MAX));
        Guard { uid }
    }

    /// As if running as `uid` (for tests).
    pub fn as_user(uid: u32) -> Guard {
        Guard { uid }
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Why a file pvescale takes orders from (the config, a CA file) could be changed by
    /// someone else: writable by its group or by everyone, or owned by a user other than root
    /// and the one pvescale runs as (as sshd's StrictModes). `None` when only they can.
    pub fn others_could_change(&self, meta: &fs::Metadata) -> Option<String> {
        let mode = meta.mode() & 0o7777;
        if mode & 0o002 != 0 {
            return Some(format!("writable by every user (mode {mode:03o})"));
        }
        if mode & 0o020 != 0 {
            return Some(format!("writable by its group (mode {mode:03o})"));
        }
        let owner = meta.uid();
        (owner != 0 && owner != self.uid).then(|| {
            format!(
                "owned by uid {owner}, neither root nor the user pvescale runs as (uid {})",
                self.uid
            )
        })
    }

    /// Opens `path` with `options` plus no-follow and non-blocking (a FIFO must not hang the
    /// run), then checks on the descriptor that it is a regular file that `trust` accepts.
    pub fn open(
        &self,
        path: &Path,
        options: &OpenOptions,
        trust: Trust,
    ) -> Result<File, FileError> {
        let mut options = options.clone();
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        let file = options
            .open(path)
            .map_err(|e| classify_open_error(path, e))?;
        let meta = file.metadata().map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(FileError::NotRegular {
                path: path.to_path_buf(),
                kind: kind_of(&meta.file_type()),
            });
        }
        let owner = meta.uid();
        let accepted = owner == self.uid
            || (trust == Trust::MineOrDirOwner
                && fs::metadata(crate::atomic_file::parent_dir(path))
                    .is_ok_and(|dir| dir.uid() == owner));
        if !accepted {
            return Err(FileError::Owner {
                path: path.to_path_buf(),
                owner,
                us: self.uid,
            });
        }
        Ok(file)
    }

    /// The whole of `path` (opened as [`Guard::open`] for reading), refused when larger
    /// than `cap` bytes, checked both by its size and while reading (a file that grows).
    pub fn read_capped(&self, path: &Path, cap: u64, trust: Trust) -> Result<Vec<u8>, FileError> {
        let file = self.open(path, OpenOptions::new().read(true), trust)?;
        let io_err = |source| FileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = file.metadata().map_err(io_err)?.len();
        let too_large = || FileError::TooLarge {
            path: path.to_path_buf(),
            cap,
        };
        if size > cap {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        if bytes.len() as u64 > cap {
            return Err(too_large());
        }
        Ok(bytes)
    }

    /// A directory pvescale keeps its decisions in must be its own (or root's) and writable
    /// by nobody else, or another user could swap the files in it (as sshd's StrictModes).
    pub fn private_dir_problem(&self, dir: &Path) -> io::Result<Option<DirProblem>> {
        let meta = fs::metadata(dir)?;
        let owner = meta.uid();
        if owner != self.uid && owner != 0 {
            return Ok(Some(DirProblem::Owner {
                dir: dir.to_path_buf(),
                owner,
                us: self.uid,
            }));
        }
        let mode = meta.mode() & 0o7777;
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            (false, true) => "every user",
            (false, false) => return Ok(None),
        };
        Ok(Some(DirProblem::Writable {
            dir: dir.to_path_buf(),
            mode,
            who,
        }))
    }
}

/// A directory where every user may replace files (mode o+w without the sticky bit), for
/// the metrics file's directory: it may belong to another user (node_exporter's), and the
/// file is written safely there anyway; only if anyone can swap it is it worth a warning.
pub fn writable_by_everyone(dir: &Path) -> io::Result<bool> {
    let mode = fs::metadata(dir)?.mode();
    Ok(mode & 0o002 != 0 && mode & 0o1000 == 0)
}

/// A failed open, told by what is at the name (looked at without following it).
fn classify_open_error(path: &Path, e: io::Error) -> FileError {
    let path_buf = path.to_path_buf();
    if e.kind() == io::ErrorKind::NotFound {
        return FileError::NotFound { path: path_buf };
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => FileError::Symlink { path: path_buf },
        Ok(meta) if !meta.file_type().is_file() => FileError::NotRegular {
            path: path_buf,
            kind: kind_of(&meta.file_type()),
        },
        _ if e.raw_os_error() == Some(libc::ELOOP) => FileError::Symlink { path: path_buf },
        _ => FileError::Io {
            path: path_buf,
            source: e,
        },
    }
}

fn kind_of(t: &fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "something else"
    }
}

/// The effective uid from `/proc/self/status` (`Uid: real effective saved fs`), else the owner
/// of `/proc/self` (which is the effective uid for an ordinary process).
pub fn effective_uid() -> Option<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok());
        if euid.is_some() {
            return euid;
        }
    }
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command;

    fn me() -> Guard {
        Guard::current()
    }

    #[test]
    fn a_file_others_could_change_is_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pvescale.toml");
        fs::write(&path, "x").unwrap();
        let why = |mode: u32, guard: Guard| {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            guard.others_could_change(&fs::metadata(&path).unwrap())
        };
        assert_eq!(why(0o640, me()), None);
        assert_eq!(why(0o644, me()), None, "readable is not changeable");
        assert_eq!(
            why(0o664, me()).as_deref(),
            Some("writable by its group (mode 664)")
        );
        assert_eq!(
            why(0o646, me()).as_deref(),
            Some("writable by every user (mode 646)")
        );
        let owner = fs::metadata(&path).unwrap().uid();
        if owner != 0 {
            let other = Guard::as_user(owner + 1);
            let said = why(0o600, other).unwrap_or_default();
            assert!(
                said.starts_with(&format!("owned by uid {owner}, neither root")),
                "{said}"
            );
        }
    }

    fn read() -> OpenOptions {
        let mut o = OpenOptions::new();
        o.read(true);
        o
    }

    /// A FIFO at `path` (mkfifo(1): the crate has no unsafe code to call mkfifo(3)).
    pub(crate) fn mkfifo(path: &Path) {
        let status = Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs");
        assert!(status.success(), "mkfifo {}", path.display());
    }

    #[test]
    fn a_regular_file_of_ours_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        assert!(me().open(&path, &read(), Trust::Mine).is_ok());
        assert!(
            me().open(&dir.path().join("none"), &read(), Trust::Mine)
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn a_symlink_is_not_followed_even_to_our_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"secret").unwrap();
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        let mut write = OpenOptions::new();
        write.append(true).create(true);
        let err = me().open(&link, &write, Trust::Mine).unwrap_err();
        assert!(matches!(err, FileError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"secret", "target untouched");
        // A dangling link is not created through either.
        let dangling = dir.path().join("dangling");
        symlink(dir.path().join("would-be-created"), &dangling).unwrap();
        let err = me().open(&dangling, &write, Trust::Mine).unwrap_err();
        assert!(matches!(err, FileError::Symlink { .. }), "{err}");
        assert!(!dir.path().join("would-be-created").exists());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        // Nobody writes to it: a blocking open or read would hang this test.
        let err = me().read_capped(&fifo, 1024, Trust::Mine).unwrap_err();
        assert!(
            matches!(err, FileError::NotRegular { kind: "a FIFO", .. }),
            "{err}"
        );
        let mut write = OpenOptions::new();
        write.write(true);
        let err = me().open(&fifo, &write, Trust::Mine).unwrap_err();
        assert!(matches!(err, FileError::NotRegular { .. }), "{err}");
    }

    #[test]
    fn a_device_is_refused() {
        let err = me()
            .read_capped(Path::new("/dev/zero"), 1024, Trust::MineOrDirOwner)
            .unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: "a character device",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn another_users_file_is_refused_and_the_dir_owners_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        // The file and the directory are ours; as any other user they are someone else's.
        let other = Guard::as_user(me().uid().wrapping_add(1));
        let err = other.open(&path, &read(), Trust::Mine).unwrap_err();
        assert!(matches!(err, FileError::Owner { .. }), "{err}");
        assert!(err.to_string().contains("belongs to user id"), "{err}");
        assert!(other.open(&path, &read(), Trust::MineOrDirOwner).is_ok());
    }

    #[test]
    fn size_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![b'a'; 100]).unwrap();
        assert_eq!(
            me().read_capped(&path, 100, Trust::Mine).unwrap().len(),
            100
        );
        let err = me().read_capped(&path, 99, Trust::Mine).unwrap_err();
        assert!(matches!(err, FileError::TooLarge { cap: 99, .. }), "{err}");
    }

    #[test]
    fn private_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(me().private_dir_problem(d).unwrap(), None);
        fs::set_permissions(d, fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(me().private_dir_problem(d).unwrap(), None);
        fs::set_permissions(d, fs::Permissions::from_mode(0o770)).unwrap();
        let p = me()
            .private_dir_problem(d)
            .unwrap()
            .expect("group-writable");
        assert!(p.to_string().contains("writable by its group"), "{p}");
        assert!(p.to_string().contains("chmod go-w"), "{p}");
        fs::set_permissions(d, fs::Permissions::from_mode(0o1777)).unwrap();
        let p = me()
            .private_dir_problem(d)
            .unwrap()
            .expect("world-writable");
        assert!(p.to_string().contains("every user"), "{p}");
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
        // Ours, seen by another (non-root) user: someone else's directory.
        let other = Guard::as_user(me().uid().wrapping_add(1).max(1));
        if me().uid() != 0 {
            assert!(matches!(
                other.private_dir_problem(d).unwrap(),
                Some(DirProblem::Owner { .. })
            ));
        } else {
            // Root's directory is trusted by everyone (root can change anything anyway).
            assert_eq!(other.private_dir_problem(d).unwrap(), None);
            let theirs = tempfile::tempdir().unwrap();
            std::os::unix::fs::chown(theirs.path(), Some(65534), None).unwrap();
            assert!(matches!(
                me().private_dir_problem(theirs.path()).unwrap(),
                Some(DirProblem::Owner { owner: 65534, .. })
            ));
        }
    }

    #[test]
    fn world_writable_without_sticky_bit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o775)).unwrap();
        assert!(!writable_by_everyone(d).unwrap());
        fs::set_permissions(d, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            !writable_by_everyone(d).unwrap(),
            "sticky: others cannot replace our files"
        );
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(writable_by_everyone(d).unwrap());
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn effective_uid_is_known() {
        assert!(effective_uid().is_some());
    }
}
