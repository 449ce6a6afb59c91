//! Raw TOML structs → [`Config`]: every range and cross-field rule, secrets, warnings.
//! Problems are collected (not stopped at the first) and carry key path and line/column.

mod notify;

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

    fn cluster(&mut self, key: &KeyPath, c: &RawCluster) -> Option<ClusterConfig> {
        let before = self.problems.len();
        let name_ok = valid_cluster_name(&c.name);
        if !name_ok {
            self.problem(
                &key.key("name"),
                "must be 1-64 characters: letters, digits, '-', '_' or '.', starting with a letter \
                 or digit (it names credential files and environment variables)",
            );
        }

        let mut urls = Vec::new();
        match normalize_url(&c.url) {
            Ok(u) => urls.push(u),
            Err(why) => self.problem(&key.key("url"), why),
        }
        for (j, u) in c.fallback_urls.iter().enumerate() {
            let k = key.key("fallback_urls").index(j);
            match normalize_url(u) {
                Ok(u) if urls.contains(&u) => self.problem(&k, format!("{u} is listed twice")),
                Ok(u) => urls.push(u),
                Err(why) => self.problem(&k, why),
            }
        }

        let tls = self.tls(key, c);
        let timeout = c.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        // Unset, it follows a shorter `timeout`: a default the user never wrote must not
        // make their config invalid.
        let connect_timeout = c
            .connect_timeout
            .map_or(DEFAULT_CONNECT_TIMEOUT.min(timeout), |d| d.0);
        if timeout.is_zero() {
            self.problem(&key.key("timeout"), "must be more than 0s");
        }
        if connect_timeout.is_zero() {
            self.problem(&key.key("connect_timeout"), "must be more than 0s");
        } else if connect_timeout > timeout {
            self.problem(
                &key.key("connect_timeout"),
                format!(
                    "{} must not be longer than timeout ({}), which bounds the whole request",
                    fmt_duration(connect_timeout),
                    fmt_duration(timeout)
                ),
            );
        }

        let task_timeout = c.task_timeout.map_or(DEFAULT_TASK_TIMEOUT, |d| d.0);
        if task_timeout.is_zero() {
            self.problem(&key.key("task_timeout"), "must be more than 0s");
        }

        let auth = if name_ok { self.auth(key, c) } else { None };
        if self.problems.len() > before {
            return None;
        }
        let (auth, secret_source) = auth?;
        Some(ClusterConfig {
            target: ClusterTarget {
                name: c.name.clone(),
                urls,
                auth,
                tls: tls?,
                timeout,
                connect_timeout,
            },
            secret_source,
            task_timeout,
        })
    }

    fn unique_cluster_names(&mut self, clusters: &[RawCluster]) {
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut by_env: HashMap<String, usize> = HashMap::new();
        for (i, c) in clusters.iter().enumerate() {
            let key = root().key("cluster").index(i).key("name");
            if let Some(first) = by_name.insert(c.name.to_ascii_lowercase(), i) {
                self.problem(
                    &key,
                    format!(
                        "cluster name {:?} is already used by cluster[{first}]; names must be unique \
                         (ignoring case)",
                        c.name
                    ),
                );
            } else if let Some(first) = by_env.insert(secrets::env_suffix(&c.name), i) {
                self.problem(
                    &key,
                    format!(
                        "cluster names {:?} and {:?} (cluster[{first}]) map to the same environment \
                         variable {}; rename one",
                        c.name,
                        clusters[first].name,
                        SecretKind::TokenSecret.env_var(&c.name)
                    ),
                );
            }
        }
    }

    fn tls(&mut self, key: &KeyPath, c: &RawCluster) -> Option<TlsMode> {
        let insecure = c.insecure == Some(true);
        let set: Vec<&str> = [
            c.ca_file.as_ref().map(|_| "ca_file"),
            c.fingerprint.as_ref().map(|_| "fingerprint"),
            insecure.then_some("insecure = true"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() > 1 {
            let k = if c.fingerprint.is_some() && c.ca_file.is_some() {
                key.key("fingerprint")
            } else {
                key.key("insecure")
            };
            self.problem(
                &k,
                format!(
                    "{} are alternatives: set one of ca_file, fingerprint or insecure = true \
                     (or none, for the system's root certificates)",
                    set.join(" and ")
                ),
            );
            return None;
        }
        if let Some(p) = &c.ca_file {
            let path = self.resolve_path(p);
            return match fs::read(&path) {
                Ok(pem) if contains(&pem, b"-----BEGIN CERTIFICATE-----") => {
                    Some(TlsMode::CaFile(path))
                }
                Ok(_) => {
                    self.problem(
                        &key.key("ca_file"),
                        format!(
                            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); on a \
                             Proxmox node the cluster CA is /etc/pve/pve-root-ca.pem",
                            path.display()
                        ),
                    );
                    None
                }
                Err(e) => {
                    self.problem(
                        &key.key("ca_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            };
        }
        if let Some(fp) = &c.fingerprint {
            return match normalize_fingerprint(fp) {
                Ok(fp) => Some(TlsMode::Fingerprint(fp)),
                Err(why) => {
                    self.problem(&key.key("fingerprint"), why);
                    None
                }
            };
        }
        if insecure {
            self.warn(
                &key.key("insecure"),
                format_args!(
                    "TLS certificate verification is off for cluster {:?}: anyone in the path can \
                     read the API credentials; use ca_file or fingerprint",
                    c.name
                ),
            );
            return Some(TlsMode::Insecure);
        }
        Some(TlsMode::SystemRoots)
    }

    fn auth(&mut self, key: &KeyPath, c: &RawCluster) -> Option<(crate::pve::Auth, SecretSource)> {
        let password_keys = [
            c.password_file.as_ref().map(|_| "password_file"),
            c.password.as_ref().map(|_| "password"),
        ];
        let token_keys = [
            c.token_secret_file.as_ref().map(|_| "token_secret_file"),
            c.token_secret.as_ref().map(|_| "token_secret"),
        ];
        let (kind, id) = match (&c.token, &c.user) {
            (Some(_), Some(_)) => {
                self.problem(
                    &key.key("user"),
                    "token and user are alternatives: use an API token (recommended) or a user with \
                     a password, not both",
                );
                return None;
            }
            (None, None) => {
                self.problem(
                    key,
                    "set token = \"user@realm!tokenid\" (an API token, recommended) or \
                     user = \"user@realm\"",
                );
                return None;
            }
            (Some(token), None) => {
                for k in password_keys.into_iter().flatten() {
                    self.problem(
                        &key.key(k),
                        "belongs to user login, but this cluster uses token",
                    );
                }
                if let Err(why) = check_token_id(token) {
                    self.problem(&key.key("token"), why);
                }
                (SecretKind::TokenSecret, token)
            }
            (None, Some(user)) => {
                for k in token_keys.into_iter().flatten() {
                    self.problem(
                        &key.key(k),
                        "belongs to token login, but this cluster uses user",
                    );
                }
                if let Err(why) = check_user_id(user) {
                    self.problem(&key.key("user"), why);
                }
                (SecretKind::Password, user)
            }
        };
        let (file, inline) = if kind == SecretKind::TokenSecret {
            (&c.token_secret_file, &c.token_secret)
        } else {
            (&c.password_file, &c.password)
        };
        if file.is_some() && inline.is_some() {
            self.problem(
                &key.key(kind.inline_key()),
                format!("set {} or {}, not both", kind.file_key(), kind.inline_key()),
            );
            return None;
        }
        let file = file.as_ref().map(|p| self.resolve_path(p));
        let resolved = secrets::resolve(
            kind,
            &c.name,
            file.as_deref(),
            inline.as_ref().map(|s| &s.0),
            self.env,
        );
        let (secret, source) = match resolved {
            Ok(r) => r,
            Err(why) => {
                let k = match (&file, inline) {
                    (Some(_), _) => key.key(kind.file_key()),
                    (None, Some(_)) => key.key(kind.inline_key()),
                    (None, None) => key.clone(),
                };
                self.problem(&k, why);
                return None;
            }
        };
        if let SecretSource::File(p) = &source {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = fs::metadata(p)
                && meta.permissions().mode() & 0o004 != 0
            {
                self.warn(
                    &key.key(kind.file_key()),
                    format_args!(
                        "{} is readable by everyone; run `chmod 600 {}`",
                        p.display(),
                        p.display()
                    ),
                );
            }
        }
        let auth = if kind == SecretKind::TokenSecret {
            Auth::Token {
                id: id.clone(),
                secret,
            }
        } else {
            Auth::Password {
                user: id.clone(),
                password: secret,
            }
        };
        Some((auth, source))
    }

    // ---- selection ----

    fn selection(&mut self, raw: Option<&RawSelect>) -> Option<Selection> {
        let key = root().key("select");
        let Some(raw) = raw else {
            self.problem(
                &key,
                "[select] is missing, so no VM would be managed: set tags, vmids or pools",
            );
            return None;
        };
        let tags = self.tags(&key.key("tags"), &raw.tags);
        let vmids = self.vmids(&key.key("vmids"), &raw.vmids);
        let pools = self.pools(&key.key("pools"), &raw.pools);
        let exclude_tags = self.tags(&key.key("exclude_tags"), &raw.exclude_tags);
        let exclude_vmids = self.vmids(&key.key("exclude_vmids"), &raw.exclude_vmids);
        if tags.is_empty() && vmids.is_empty() && pools.is_empty() {
            self.problem(&key, "[select] matches no VM: set tags, vmids or pools");
            return None;
        }
        for t in tags.iter().filter(|t| exclude_tags.contains(t)) {
            self.warn(
                &key.key("exclude_tags"),
                format_args!("tag {t:?} is both selected and excluded; excluded wins"),
            );
        }
        for id in vmids.intersection(&exclude_vmids) {
            self.warn(
                &key.key("exclude_vmids"),
                format_args!("VM {id} is both selected and excluded; excluded wins"),
            );
        }
        Some(Selection {
            tags,
            vmids,
            pools,
            exclude_tags,
            exclude_vmids,
        })
    }

    /// Tags as Proxmox VE allows them (`[a-z0-9_][a-z0-9_+.-]*`, any case), lowercased, deduplicated.
    fn tags(&mut self, key: &KeyPath, raw: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            if !valid_tag(t) {
                self.problem(
                    &key.index(i),
                    format!(
                        "{t:?} is not a Proxmox VE tag: letters, digits, '_', '-', '+' and '.', not \
                         starting with '-', '+' or '.'"
                    ),
                );
                continue;
            }
            let t = t.to_ascii_lowercase();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    fn vmids(&mut self, key: &KeyPath, raw: &[u32]) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for (i, id) in raw.iter().enumerate() {
            if (100..=999_999_999).contains(id) {
                out.insert(*id);
            } else {
                self.problem(
                    &key.index(i),
                    format!("{id} is not a VM ID: Proxmox VE uses 100 to 999999999"),
                );
            }
        }
        out
    }

    fn pools(&mut self, key: &KeyPath, raw: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            let ok = !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'));
            if !ok {
                self.problem(
                    &key.index(i),
                    format!(
                        "{p:?} is not a Proxmox VE pool name: letters, digits, '-', '_' (and '/' \
                         for nested pools)"
                    ),
                );
            } else if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }

    // ---- policy ----

    fn policy(&mut self, raw: &RawConfig) -> Policy {
        let key = root().key("policy");
        let p = &raw.policy;
        let mut policy = Policy::default();
        if let Some(Dur(w)) = p.window {
            if w > MAX_WINDOW {
                self.problem(
                    &key.key("window"),
                    format!(
                        "{} is longer than the 30 minutes of samples Proxmox keeps for \
                         cluster/metrics/export (180 × 10 s): at most 30m",
                        fmt_duration(w)
                    ),
                );
            } else if w < MIN_WINDOW {
                self.problem(
                    &key.key("window"),
                    format!(
                        "{} is out of range: 1m to 30m (pvescale runs once a minute)",
                        fmt_duration(w)
                    ),
                );
            } else {
                policy.window = w;
            }
        }
        if let Some(n) = p.min_samples {
            if n >= 1 {
                policy.min_samples = n;
            } else {
                self.problem(&key.key("min_samples"), "must be at least 1");
            }
        }
        if let Some(Percent(m)) = p.memory_margin {
            if (0.0..100.0).contains(&m) {
                policy.memory_margin = m;
            } else {
                self.problem(
                    &key.key("memory_margin"),
                    format!("{m} is out of range: a percentage from 0 up to (not including) 100"),
                );
            }
        }
        if let Some(Dur(s)) = p.stale_after {
            if s < Duration::from_secs(120) {
                self.problem(
                    &key.key("stale_after"),
                    format!(
                        "{} is too short: at least 2m (a run a minute, and the newest sample may \
                         lag it)",
                        fmt_duration(s)
                    ),
                );
            } else {
                policy.stale_after = s;
            }
        }
        if let Some(Dur(b)) = p.backoff {
            if b.is_zero() {
                self.problem(
                    &key.key("backoff"),
                    "must be more than 0s (a refused change must not be retried every run)",
                );
            } else {
                policy.backoff = b;
            }
        }

        let cpu_key = key.key("cpu");
        let cpu = self.resource_override(&cpu_key, &p.cpu, Resource::Cpu);
        cpu.apply_to(&mut policy.cpu);
        self.check_resource(&cpu_key, &policy.cpu, Resource::Cpu, "");
        let mem_key = key.key("memory");
        let memory = self.resource_override(&mem_key, &p.memory, Resource::Memory);
        memory.apply_to(&mut policy.memory);
        self.check_resource(&mem_key, &policy.memory, Resource::Memory, "");

        let host_key = root().key("host");
        let mut host: HostGuard = policy.host.clone();
        if let Some(Percent(v)) = raw.host.max_memory
            && self.percent(&host_key.key("max_memory"), v)
        {
            host.max_memory = v;
        }
        if let Some(Percent(v)) = raw.host.max_cpu
            && self.percent(&host_key.key("max_cpu"), v)
        {
            host.max_cpu = v;
        }
        policy.host = host;
        policy
    }

    /// `0 < v ≤ 100`.
    fn percent(&mut self, key: &KeyPath, v: f64) -> bool {
        let ok = v > 0.0 && v <= 100.0;
        if !ok {
            self.problem(
                key,
                format!("{v} is out of range: a percentage above 0 and at most 100"),
            );
        }
        ok
    }

    fn resource_override<A: Copy + Into<u64>>(
        &mut self,
        key: &KeyPath,
        raw: &RawResource<A>,
        resource: Resource,
    ) -> ResourceOverride {
        let mut o = ResourceOverride {
            enabled: raw.enabled,
            scale_up: raw.scale_up,
            scale_down: raw.scale_down,
            up_after: raw.up_after.map(|d| d.0),
            down_after: raw.down_after.map(|d| d.0),
            cooldown_up: raw.cooldown_up.map(|d| d.0),
            cooldown_down: raw.cooldown_down.map(|d| d.0),
            ..ResourceOverride::default()
        };
        if let Some(f) = raw.saturated_factor {
            if f.is_finite() && (1.0..=10.0).contains(&f) {
                o.saturated_factor = Some(f);
            } else {
                self.problem(
                    &key.key("saturated_factor"),
                    format!("{f} is out of range: 1 to 10 (1 = no faster than toward target)"),
                );
            }
        }
        for (name, value, slot) in [
            ("high", raw.high, &mut o.high),
            ("low", raw.low, &mut o.low),
            ("target", raw.target, &mut o.target),
        ] {
            if let Some(Percent(v)) = value
                && self.percent(&key.key(name), v)
            {
                *slot = Some(v);
            }
        }
        let (least_size, least_step, show): (u64, u64, fn(u64) -> String) = match resource {
            Resource::Cpu => (1, 1, |n| format!("{n} vCPUs")),
            Resource::Memory => (MIN_HOTPLUG_MEMORY_MIB, MIN_MEMORY_STEP_MIB, fmt_mib),
        };
        let why_size = match resource {
            Resource::Cpu => "a VM needs at least 1 vCPU",
            Resource::Memory => "Proxmox VE memory hotplug needs at least 1 GiB",
        };
        let why_step = match resource {
            Resource::Cpu => "a step is at least 1 vCPU",
            Resource::Memory => "the smallest memory hotplug DIMM is 512 MiB",
        };
        for (name, value, slot, least, why) in [
            ("min", raw.min, &mut o.min, least_size, why_size),
            ("max", raw.max, &mut o.max, least_size, why_size),
            (
                "max_step_up",
                raw.max_step_up,
                &mut o.max_step_up,
                least_step,
                why_step,
            ),
            (
                "max_step_down",
                raw.max_step_down,
                &mut o.max_step_down,
                least_step,
                why_step,
            ),
        ] {
            if let Some(v) = value {
                let v: u64 = v.into();
                if v >= least {
                    *slot = Some(v);
                } else {
                    self.problem(
                        &key.key(name),
                        format!("{} is too small: at least {} ({why})", show(v), show(least)),
                    );
                }
            }
        }
        o
    }

    /// The cross-field rules of one resource. `context` is appended to each message.
    fn check_resource(
        &mut self,
        key: &KeyPath,
        p: &ResourcePolicy,
        resource: Resource,
        context: &str,
    ) -> bool {
        let found = resource_rule_violations(p, resource);
        let ok = found.is_empty();
        for (field, why) in found {
            self.problem(&key.key(field), format!("{why}{context}"));
        }
        ok
    }

    // ---- overrides ----

    fn override_(&mut self, i: usize, raw: &RawOverride, base: &Policy) -> Option<Override> {
        let key = root().key("override").index(i);
        let before = self.problems.len();
        let vmids = self.vmids(&key.key("vmids"), &raw.vmids);
        let tags = self.tags(&key.key("tags"), &raw.tags);
        let pools = self.pools(&key.key("pools"), &raw.pools);
        if raw.vmids.is_empty() && raw.tags.is_empty() && raw.pools.is_empty() {
            self.problem(
                &key,
                "an override needs vmids, tags or pools to say which VMs it applies to \
                 (for all VMs, set [policy] instead)",
            );
        }
        if raw.cpu.is_empty() && raw.memory.is_empty() {
            self.problem(
                &key,
                "changes nothing: set cpu = { ... } and/or memory = { ... }",
            );
        }
        let cpu = self.resource_override(&key.key("cpu"), &raw.cpu, Resource::Cpu);
        let memory = self.resource_override(&key.key("memory"), &raw.memory, Resource::Memory);
        if self.problems.len() > before {
            return None;
        }
        let o = Override {
            vmids,
            tags,
            pools,
            cpu,
            memory,
        };
        let mut p = base.clone();
        o.apply_to(&mut p);
        let context = " (after applying this override to [policy])";
        let cpu_ok = self.check_resource(&key.key("cpu"), &p.cpu, Resource::Cpu, context);
        let mem_ok = self.check_resource(&key.key("memory"), &p.memory, Resource::Memory, context);
        (cpu_ok && mem_ok).then_some(o)
    }

    /// Overrides that can apply to the same VM must together still give a valid policy. Any
    /// rule involves at most three keys, so checking every pair and triple (in file order)
    /// that can match one VM covers every combination.
    fn override_combinations(&mut self, overrides: &[Override], base: &Policy) {
        let n = overrides.len();
        let mut bad: Vec<Vec<usize>> = Vec::new();
        let mut subsets: Vec<Vec<usize>> = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                subsets.push(vec![a, b]);
            }
        }
        for a in 0..n {
            for b in a + 1..n {
                for c in b + 1..n {
                    subsets.push(vec![a, b, c]);
                }
            }
        }
        for subset in subsets {
            if bad.iter().any(|s| s.iter().all(|i| subset.contains(i))) {
                continue;
            }
            let members: Vec<&Override> = subset.iter().map(|&i| &overrides[i]).collect();
            if !can_match_one_vm(&members) {
                continue;
            }
            let mut p = base.clone();
            for o in &members {
                o.apply_to(&mut p);
            }
            let mut found: Vec<(&str, String)> = Vec::new();
            for (name, r, resource) in [
                ("cpu", &p.cpu, Resource::Cpu),
                ("memory", &p.memory, Resource::Memory),
            ] {
                for (field, why) in resource_rule_violations(r, resource) {
                    found.push((name, format!("{field}: {why}")));
                }
            }
            if found.is_empty() {
                continue;
            }
            let last = subset.last().copied().unwrap_or(0);
            let others: Vec<String> = subset[..subset.len() - 1]
                .iter()
                .map(|i| format!("override[{i}]"))
                .collect();
            for (name, why) in found {
                self.problem(
                    &root().key("override").index(last).key(name),
                    format!(
                        "together with {} (they can apply to the same VM, later wins): {why}",
                        others.join(" and ")
                    ),
                );
            }
            bad.push(subset);
        }
    }
}

/// The rules of [`ResourcePolicy`] that involve more than one key: `(key, why)` per violation.
fn resource_rule_violations(p: &ResourcePolicy, resource: Resource) -> Vec<(&'static str, String)> {
    let show = |n: u64| match resource {
        Resource::Cpu => n.to_string(),
        Resource::Memory => fmt_mib(n),
    };
    let mut out = Vec::new();
    if p.low >= p.high {
        out.push((
            "low",
            format!("low ({}) must be below high ({})", p.low, p.high),
        ));
    } else if let Some(t) = p.target
        && !(p.low < t && t < p.high)
    {
        out.push((
            "target",
            format!(
                "target ({t}) must be between low ({}) and high ({})",
                p.low, p.high
            ),
        ));
    }
    if p.min > p.max {
        out.push((
            "min",
            format!(
                "min ({}) must not be above max ({})",
                show(p.min),
                show(p.max)
            ),
        ));
    }
    out
}

/// Whether some VM can match every override in `members`: any VM can carry any tags, but it
/// has one VM ID and at most one pool.
fn can_match_one_vm(members: &[&Override]) -> bool {
    let tagless: Vec<&&Override> = members.iter().filter(|o| o.tags.is_empty()).collect();
    if tagless.is_empty() {
        return true;
    }
    let mut vmid_candidates: Vec<Option<u32>> = vec![None];
    vmid_candidates.extend(
        tagless
            .iter()
            .flat_map(|o| o.vmids.iter().copied().map(Some)),
    );
    let mut pool_candidates: Vec<Option<&str>> = vec![None];
    pool_candidates.extend(
        tagless
            .iter()
            .flat_map(|o| o.pools.iter().map(|p| Some(p.as_str()))),
    );
    vmid_candidates.iter().any(|vmid| {
        pool_candidates.iter().any(|pool| {
            tagless.iter().all(|o| {
                vmid.is_some_and(|v| o.vmids.contains(&v))
                    || pool.is_some_and(|p| o.pools.iter().any(|q| q == p))
            })
        })
    })
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

fn valid_cluster_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

/// `user@realm!tokenid`. Never quotes the value: a pasted `id=secret` must not end up in logs.
fn check_token_id(token: &str) -> Result<(), String> {
    if token.contains('=') || token.chars().any(char::is_whitespace) {
        return Err(
            "must be only the token ID, user@realm!tokenid, without the secret; put the secret in \
             token_secret_file (value not shown)"
                .to_owned(),
        );
    }
    let ok = token.split_once('!').is_some_and(|(user, id)| {
        check_user_id(user).is_ok()
            && !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    });
    if ok {
        Ok(())
    } else {
        Err(
            "must be an API token ID: user@realm!tokenid, e.g. \"pvescale@pve!autoscale\""
                .to_owned(),
        )
    }
}

/// `user@realm`.
fn check_user_id(user: &str) -> Result<(), String> {
    let ok = user.rsplit_once('@').is_some_and(|(name, realm)| {
        !name.is_empty()
            && !realm.is_empty()
            && !user.contains('!')
            && !user.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    if ok {
        Ok(())
    } else {
        Err("must be user@realm, e.g. \"pvescale@pve\" or \"root@pam\"".to_owned())
    }
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

impl From<Vcpus> for u64 {
    fn from(v: Vcpus) -> u64 {
        v.0
    }
}

impl From<Mib> for u64 {
    fn from(v: Mib) -> u64 {
        v.0
    }
}
