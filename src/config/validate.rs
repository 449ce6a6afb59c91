//! Raw TOML structs → [`Config`]: every range and cross-field rule, secrets, warnings.
//! Problems are collected (not stopped at the first) and carry key path and line/column.

mod cluster;
mod notify;
mod policy;
mod schedule;
mod select;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::locate::{Doc, KeyPath};
use super::paths::Env;
use super::raw::{
    Dur, Mib, Percent, RawCluster, RawConfig, RawOverride, RawResource, RawSelect, Vcpus,
};
use super::secrets::{self, SecretKind, SecretSource};
use super::{
    ClusterConfig, Config, ConfigError, Override, Problem, ResourceOverride, Selection, Warning,
};
use crate::policy::{HostGuard, Policy, Resource, ResourcePolicy};
use crate::pve::{Auth, ClusterTarget, TlsMode};
use crate::units::{fmt_duration, fmt_mib};

/// Default port of the Proxmox VE API.
pub(crate) const DEFAULT_PORT: u16 = 8006;
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a config write's task; a later run settles one that outlives it.
pub(crate) const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Proxmox VE memory hotplug needs at least this much memory (the static part).
pub(crate) const MIN_HOTPLUG_MEMORY_MIB: u64 = 1024;
/// The smallest DIMM Proxmox VE hotplugs; a smaller memory step could not be applied.
pub(crate) const MIN_MEMORY_STEP_MIB: u64 = 512;
pub(crate) const MIN_WINDOW: Duration = Duration::from_secs(60);
/// `metrics/export` keeps 180 old generations of pvestatd's 10 s loop (pve-manager
/// PVE/PullMetric.pm): a longer window would silently average less than it says.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(1800);
/// `[history] max_size` when not set.
pub(crate) const DEFAULT_HISTORY_MAX_SIZE_MIB: u64 = 1;

pub(super) fn parse(
    text: &str,
    path: &Path,
    mode: Option<u32>,
    env: &dyn Env,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let parse_error = |key: String, location, message: &str| ConfigError::Parse {
        path: path.to_path_buf(),
        problem: Problem {
            key,
            location,
            message: message.to_owned(),
        },
    };
    let doc = Doc::parse(text).map_err(|e| {
        let location = e.span().map(|s| super::locate::location(text, s.start));
        parse_error(String::new(), location, e.message())
    })?;
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (key, location) = match e.span() {
            Some(s) => (
                doc.path_at(s.start).to_string(),
                Some(doc.location(s.start)),
            ),
            None => (String::new(), None),
        };
        let mut message = e.message().to_owned();
        if (key == "cluster" || key == "override") && message.contains("expected a sequence") {
            message.push_str(&format!(" (write [[{key}]], with double brackets)"));
        }
        parse_error(key, location, &message)
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut v = Validator {
        doc: &doc,
        path,
        base_dir,
        env,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let config = v.config(raw, mode);
    if v.problems.is_empty()
        && let Some(config) = config
    {
        Ok((config, v.warnings))
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: v.problems,
        })
    }
}

struct Validator<'a> {
    doc: &'a Doc<'a>,
    path: &'a Path,
    base_dir: PathBuf,
    env: &'a dyn Env,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

fn root() -> KeyPath {
    KeyPath::root()
}

impl Validator<'_> {
    fn problem(&mut self, key: &KeyPath, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            location: self.doc.location_of(key),
            message: message.into(),
        });
    }

    /// A CA file decides whom pvescale trusts with its token: warn when someone other than
    /// root or pvescale's user could change it.
    fn ca_file_others_could_change(&mut self, key: &KeyPath, path: &Path) {
        let why = fs::metadata(path)
            .ok()
            .and_then(|meta| crate::fs_guard::Guard::current().others_could_change(&meta));
        if let Some(why) = why {
            self.warn(
                key,
                format!(
                    "{} is {why}: whoever can change it decides which servers pvescale \
                     trusts; make it root's and chmod go-w it",
                    path.display()
                ),
            );
        }
    }

    fn warn(&mut self, key: &KeyPath, message: impl std::fmt::Display) {
        let at = match self.doc.location_of(key) {
            Some(l) => format!("{}:{}:{}", self.path.display(), l.line, l.column),
            None => self.path.display().to_string(),
        };
        self.warnings
            .push(Warning(format!("{at}: {key}: {message}")));
    }

    /// A path from the config, made absolute against the config file's directory.
    fn resolve_path(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }

    fn config(&mut self, raw: RawConfig, mode: Option<u32>) -> Option<Config> {
        let state_dir = match &raw.state_dir {
            Some(p) if p.as_os_str().is_empty() => {
                self.problem(
                    &root().key("state_dir"),
                    "is empty; leave it out for the default",
                );
                None
            }
            Some(p) => Some(self.resolve_path(p)),
            None => None,
        };
        let metrics_file = self.metrics_file(raw.metrics_file.as_deref());
        let history_max_size_mib = match raw.history.as_ref().and_then(|h| h.max_size) {
            Some(Mib(0)) => {
                self.problem(
                    &root().key("history").key("max_size"),
                    "must be at least 1MiB",
                );
                DEFAULT_HISTORY_MAX_SIZE_MIB
            }
            Some(Mib(mib)) => mib,
            None => DEFAULT_HISTORY_MAX_SIZE_MIB,
        };

        if raw.cluster.is_empty() {
            self.problem(
                &root().key("cluster"),
                "at least one [[cluster]] is needed (name, url, and token or user)",
            );
        }
        let mut inline_secrets = Vec::new();
        let mut clusters = Vec::new();
        for (i, c) in raw.cluster.iter().enumerate() {
            let key = root().key("cluster").index(i);
            if c.token_secret.is_some() {
                inline_secrets.push(key.key("token_secret"));
            }
            if c.password.is_some() {
                inline_secrets.push(key.key("password"));
            }
            if let Some(c) = self.cluster(&key, c) {
                clusters.push(c);
            }
        }
        self.unique_cluster_names(&raw.cluster);
        if let Some(mode) = mode
            && mode & 0o044 != 0
        {
            for key in inline_secrets {
                self.warn(
                    &key,
                    format_args!(
                        "the config file is readable by {} (mode {:03o}) and holds this secret inline; \
                         run `chmod 600 {}` or move it to {}_file or a systemd credential",
                        if mode & 0o004 != 0 { "others" } else { "its group" },
                        mode & 0o777,
                        self.path.display(),
                        key_leaf(&key),
                    ),
                );
            }
        }

        let select = self.selection(raw.select.as_ref());
        let policy = self.policy(&raw);
        let overrides: Vec<Override> = raw
            .overrides
            .iter()
            .enumerate()
            .filter_map(|(i, o)| self.override_(i, o, &policy))
            .collect();
        if overrides.len() == raw.overrides.len() {
            self.override_combinations(&overrides, &policy);
        }
        let schedules = self.schedules(&raw.schedule, &policy);
        let notify = self.notify(raw.notify.as_ref(), mode);

        Some(Config {
            path: self.path.to_path_buf(),
            state_dir,
            metrics_file,
            history_max_size_mib,
            clusters,
            select: select?,
            policy,
            overrides,
            schedules,
            notify,
        })
    }

    /// `metrics_file`: not empty, made absolute; a name node_exporter would not read is
    /// worth a warning (its textfile collector only reads `*.prom`).
    fn metrics_file(&mut self, raw: Option<&Path>) -> Option<PathBuf> {
        let key = root().key("metrics_file");
        let path = raw?;
        if path.as_os_str().is_empty() || path.file_name().is_none() {
            self.problem(
                &key,
                "must name a file, e.g. \"/var/lib/prometheus/node-exporter/pvescale.prom\"",
            );
            return None;
        }
        if path.extension().is_none_or(|e| e != "prom") {
            self.warn(
                &key,
                "does not end in .prom; node_exporter's textfile collector reads only *.prom files",
            );
        }
        Some(self.resolve_path(path))
    }

    // ---- clusters ----

    // ---- selection ----

    // ---- policy ----

    // ---- overrides ----
}

fn key_leaf(key: &KeyPath) -> String {
    key.to_string()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `https://host[:port][/]` → `https://host:port` (port 8006 when absent, host lowercased).
/// `/api2/json` at the end is accepted and dropped.
pub(crate) fn normalize_url(url: &str) -> Result<String, String> {
    let shape = "must be https://HOST or https://HOST:PORT, e.g. \"https://pve1.example.com:8006\"";
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url["https://".len()..]
    } else if lower.starts_with("http://") {
        return Err(format!(
            "{url:?} uses http://; the Proxmox VE API is served over HTTPS only: {shape}"
        ));
    } else {
        return Err(format!("{url:?} {shape}"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let rest = rest.strip_suffix("/api2/json").unwrap_or(rest);
    if rest.contains('@') {
        return Err(format!(
            "must not contain a user name or password; use token or user instead: {shape}"
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!("{url:?} has a path, query or fragment: {shape}"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("{url:?}: unclosed '[' in an IPv6 address"));
        };
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("{url:?}: invalid IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("{url:?} {shape}")),
            },
        };
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !host.starts_with(['-', '.']);
        if !ok {
            return Err(format!("{url:?}: invalid host name: {shape}"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("{url:?}: the port must be 1 to 65535")),
        },
    };
    Ok(format!("https://{host}:{port}"))
}

/// 64 hex digits, any case, colons between every pair or none → `AB:CD:...` (uppercase).
pub(crate) fn normalize_fingerprint(fp: &str) -> Result<String, String> {
    let fp = fp.trim();
    let hex: String = fp.chars().filter(|c| *c != ':').collect();
    let pairs_ok = !fp.contains(':') || fp.split(':').all(|pair| pair.len() == 2);
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) || !pairs_ok {
        return Err(
            "must be the server certificate's SHA-256 fingerprint: 64 hex digits, optionally as \
             32 colon-separated pairs (Proxmox GUI: node → System → Certificates → View Certificate)"
                .to_owned(),
        );
    }
    let upper = hex.to_ascii_uppercase();
    let pairs: Vec<&str> = (0..32)
        .filter_map(|i| upper.get(i * 2..i * 2 + 2))
        .collect();
    Ok(pairs.join(":"))
}
