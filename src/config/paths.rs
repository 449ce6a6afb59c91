//! Where the config file and the state directory are, from the command line, the environment
//! and who we run as. The environment is a parameter ([`Env`]) so tests never touch the process
//! environment.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The system-wide config file, used when running as root.
pub const SYSTEM_CONFIG_FILE: &str = "/etc/pvescale/pvescale.toml";
/// The system-wide state directory, used when running as root.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/pvescale";
/// The config file's name inside the per-user config directory.
pub const CONFIG_FILE_NAME: &str = "pvescale.toml";

/// What pvescale reads from its surroundings: environment variables, whether it runs as root,
/// and the per-user (XDG) directories.
pub trait Env {
    /// An environment variable; `None` when unset.
    fn var_os(&self, name: &str) -> Option<OsString>;
    /// Effective user id 0.
    fn is_root(&self) -> bool;
    /// The per-user config directory of pvescale (e.g. `~/.config/pvescale`).
    fn user_config_dir(&self) -> Option<PathBuf>;
    /// The per-user state directory of pvescale (e.g. `~/.local/state/pvescale`).
    fn user_state_dir(&self) -> Option<PathBuf>;

    /// An environment variable that is set and not empty.
    fn non_empty_var(&self, name: &str) -> Option<OsString> {
        self.var_os(name).filter(|v| !v.is_empty())
    }
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnv;

impl Env for SystemEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }

    fn is_root(&self) -> bool {
        crate::fs_guard::effective_uid() == Some(0)
    }

    fn user_config_dir(&self) -> Option<PathBuf> {
        project_dirs().map(|d| d.config_dir().to_path_buf())
    }

    fn user_state_dir(&self) -> Option<PathBuf> {
        project_dirs().map(|d| {
            d.state_dir()
                .unwrap_or_else(|| d.data_local_dir())
                .to_path_buf()
        })
    }
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "pvescale")
}

/// A made-up environment for tests (of this crate and of its users): variables from a map,
/// root or not, fixed per-user directories.
#[derive(Debug, Clone, Default)]
pub struct FakeEnv {
    pub vars: HashMap<String, OsString>,
    pub root: bool,
    pub config_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

impl FakeEnv {
    pub fn new() -> Self {
        FakeEnv::default()
    }

    /// Adds a variable.
    pub fn var(mut self, name: &str, value: impl Into<OsString>) -> Self {
        self.vars.insert(name.to_owned(), value.into());
        self
    }
}

impl Env for FakeEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.vars.get(name).cloned()
    }

    fn is_root(&self) -> bool {
        self.root
    }

    fn user_config_dir(&self) -> Option<PathBuf> {
        self.config_dir.clone()
    }

    fn user_state_dir(&self) -> Option<PathBuf> {
        self.state_dir.clone()
    }
}

/// The config file to read: `--config`, else `$PVESCALE_CONFIG`, else
/// `/etc/pvescale/pvescale.toml` as root, else `pvescale.toml` in the per-user config directory
/// (falling back to the system file when there is no home directory).
pub fn config_path(cli: Option<PathBuf>, env: &dyn Env) -> PathBuf {
    if let Some(path) = cli {
        return path;
    }
    if let Some(path) = env.non_empty_var("PVESCALE_CONFIG") {
        return PathBuf::from(path);
    }
    if !env.is_root()
        && let Some(dir) = env.user_config_dir()
    {
        return dir.join(CONFIG_FILE_NAME);
    }
    PathBuf::from(SYSTEM_CONFIG_FILE)
}

/// The state directory: `state_dir` from the config, else the first path of
/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`; colon-separated), else
/// `/var/lib/pvescale` as root, else the per-user state directory (falling back to the system
/// one when there is no home directory).
pub fn state_dir(configured: Option<&Path>, env: &dyn Env) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    if let Some(dirs) = env.non_empty_var("STATE_DIRECTORY") {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(dirs.as_os_str());
        if let Some(first) = bytes.split(|b| *b == b':').find(|p| !p.is_empty()) {
            return PathBuf::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(first),
            );
        }
    }
    if !env.is_root()
        && let Some(dir) = env.user_state_dir()
    {
        return dir;
    }
    PathBuf::from(SYSTEM_STATE_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> FakeEnv {
        FakeEnv {
            config_dir: Some("/home/u/.config/pvescale".into()),
            state_dir: Some("/home/u/.local/state/pvescale".into()),
            ..FakeEnv::default()
        }
    }

    fn root() -> FakeEnv {
        FakeEnv {
            root: true,
            ..user()
        }
    }

    #[test]
    fn config_path_order() {
        let cli = Some(PathBuf::from("/x/cli.toml"));
        let env = root().var("PVESCALE_CONFIG", "/x/env.toml");
        assert_eq!(config_path(cli.clone(), &env), PathBuf::from("/x/cli.toml"));
        assert_eq!(config_path(None, &env), PathBuf::from("/x/env.toml"));
        assert_eq!(
            config_path(None, &root()),
            PathBuf::from(SYSTEM_CONFIG_FILE)
        );
        assert_eq!(
            config_path(None, &user()),
            PathBuf::from("/home/u/.config/pvescale/pvescale.toml")
        );
        // Empty variable = unset; no home directory = the system file.
        let env = user().var("PVESCALE_CONFIG", "");
        assert_eq!(
            config_path(None, &env),
            PathBuf::from("/home/u/.config/pvescale/pvescale.toml")
        );
        assert_eq!(
            config_path(None, &FakeEnv::new()),
            PathBuf::from(SYSTEM_CONFIG_FILE)
        );
    }

    #[test]
    fn state_dir_order() {
        let env = root().var("STATE_DIRECTORY", "/var/lib/a:/var/lib/b");
        assert_eq!(
            state_dir(Some(Path::new("/srv/st")), &env),
            PathBuf::from("/srv/st")
        );
        assert_eq!(state_dir(None, &env), PathBuf::from("/var/lib/a"));
        let env = user().var("STATE_DIRECTORY", ":/var/lib/b");
        assert_eq!(state_dir(None, &env), PathBuf::from("/var/lib/b"));
        assert_eq!(state_dir(None, &root()), PathBuf::from(SYSTEM_STATE_DIR));
        assert_eq!(
            state_dir(None, &user()),
            PathBuf::from("/home/u/.local/state/pvescale")
        );
        assert_eq!(
            state_dir(None, &FakeEnv::new()),
            PathBuf::from(SYSTEM_STATE_DIR)
        );
    }
}
