//! The config file: TOML schema (unknown keys are errors), validation into types that can not
//! hold an invalid value, secrets, and the default paths.
//!
//! The file is read in two steps, as tealdeer does: serde fills raw structs that mirror the TOML
//! (`raw.rs`), then `validate.rs` checks every value and cross-field rule, collecting all
//! problems with their key path (`policy.cpu.low`) and line/column, and builds [`Config`].
//! `examples/pvescale.toml` documents every key.

pub mod doc;
mod locate;
pub mod notify;
mod paths;
mod raw;
mod schedule;
mod secrets;
mod validate;

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use locate::Location;
pub use paths::{
    CONFIG_FILE_NAME, Env, FakeEnv, SYSTEM_CONFIG_FILE, SYSTEM_STATE_DIR, SystemEnv, config_path,
    state_dir,
};
pub use schedule::Schedule;
pub use secrets::SecretSource;

use crate::guest::GuestKind;
use crate::policy::{Policy, ResourcePolicy};
use crate::pve::ClusterTarget;

/// A validated config. Built only by [`load`], [`load_with`] or [`parse_str`].
#[derive(Debug, Clone)]
pub struct Config {
    path: PathBuf,
    state_dir: Option<PathBuf>,
    metrics_file: Option<PathBuf>,
    history_max_size_mib: u64,
    clusters: Vec<ClusterConfig>,
    select: Selection,
    policy: Policy,
    overrides: Vec<Override>,
    schedules: Vec<Schedule>,
    notify: notify::NotifyConfig,
}

impl Config {
    /// The file this config was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `state_dir` as configured (made absolute against the config file's directory), if set.
    /// See [`state_dir`] for the full rule.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// The state directory to use: configured, `$STATE_DIRECTORY`, or the default.
    pub fn resolved_state_dir(&self, env: &dyn Env) -> PathBuf {
        state_dir(self.state_dir(), env)
    }

    /// Where a run writes its Prometheus textfile (absolute), if configured.
    pub fn metrics_file(&self) -> Option<&Path> {
        self.metrics_file.as_deref()
    }

    /// `[history] max_size`: past this size `history.jsonl` is rotated to `history.jsonl.1`.
    pub fn history_max_size_mib(&self) -> u64 {
        self.history_max_size_mib
    }

    /// One or more clusters, in file order; names are unique.
    pub fn clusters(&self) -> &[ClusterConfig] {
        &self.clusters
    }

    /// Which VMs are managed.
    pub fn selection(&self) -> &Selection {
        &self.select
    }

    /// The policy of a VM that no override matches: defaults ← `[policy]` ← `[host]`.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The `[[override]]` entries, in file order.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }

    /// The `[[schedule]]` entries, in file order.
    pub fn schedules(&self) -> &[Schedule] {
        &self.schedules
    }

    /// The schedule windows in force for a VM at `now` (unix seconds); `local` is the zone of
    /// schedules that set no `timezone`.
    pub fn windows_in_force(
        &self,
        vmid: u32,
        tags: &[String],
        pool: Option<&str>,
        now: u64,
        local: &jiff::tz::TimeZone,
    ) -> Vec<crate::policy::WindowInForce> {
        self.schedules
            .iter()
            .filter(|s| s.matches(vmid, tags, pool))
            .filter_map(|s| s.in_force(now, local))
            .collect()
    }

    /// `[notify]`: events, limits and channels (defaults, and no channel, when absent).
    pub fn notify(&self) -> &notify::NotifyConfig {
        &self.notify
    }

    /// Whether the guest is managed at all (see [`Selection::takes`]).
    pub fn manages(&self, kind: GuestKind, vmid: u32, tags: &[String], pool: Option<&str>) -> bool {
        self.select.takes(kind, vmid, tags, pool)
    }

    /// The effective policy of a VM: [`Config::policy`], then every matching override in file
    /// order (a later one wins where both set a key). Validation has checked every combination
    /// of overrides that can apply to one VM, so the result always satisfies the policy rules
    /// (`low < high`, `min ≤ max`, target between low and high).
    pub fn policy_for(
        &self,
        kind: GuestKind,
        vmid: u32,
        tags: &[String],
        pool: Option<&str>,
    ) -> Policy {
        let mut policy = self.policy.clone();
        for o in &self.overrides {
            if o.matches(kind, vmid, tags, pool) {
                o.apply_to(&mut policy);
            }
        }
        policy
    }
}

/// One `[[cluster]]`: where and how to connect, with its secret resolved.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    target: ClusterTarget,
    secret_source: SecretSource,
    task_timeout: std::time::Duration,
    active: Activity,
    local_node: Option<String>,
}

/// When a run acts on a cluster (`active` of a `[[cluster]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// On a member node, only the cluster's one active scaler acts (see `leader`).
    Auto,
    /// Always act, wherever this runs.
    Always,
}

impl ClusterConfig {
    /// `active`: whether only the cluster's active node acts.
    pub fn activity(&self) -> Activity {
        self.active
    }

    /// The node this runs on (`local_node`), when set; else the host name is taken.
    pub fn local_node(&self) -> Option<&str> {
        self.local_node.as_deref()
    }

    /// Longest wait for a config write's task (`task_timeout`).
    pub fn task_timeout(&self) -> std::time::Duration {
        self.task_timeout
    }

    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// What the API client needs (the primary URL first, then fallbacks; normalised to
    /// `https://host:port`).
    pub fn target(&self) -> ClusterTarget {
        self.target.clone()
    }

    /// Same as [`ClusterConfig::target`], borrowed.
    pub fn target_ref(&self) -> &ClusterTarget {
        &self.target
    }

    /// Where the token secret or password came from (never the value).
    pub fn secret_source(&self) -> &SecretSource {
        &self.secret_source
    }
}

/// The managed VMs: those with any of `tags`, any of `vmids` or in any of `pools`, minus those
/// with any of `exclude_tags` or in `exclude_vmids`. Tags are compared case-insensitively
/// (Proxmox VE stores them lowercase); pools exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    tags: Vec<String>,
    vmids: BTreeSet<u32>,
    pools: Vec<String>,
    exclude_tags: Vec<String>,
    exclude_vmids: BTreeSet<u32>,
    /// Guest types managed (`types`): VMs only unless containers are asked for.
    types: BTreeSet<GuestKind>,
    /// The same tags and pools as sets, so that matching a VM costs its own tags' lookups,
    /// whatever the length of the lists.
    tag_set: BTreeSet<String>,
    exclude_tag_set: BTreeSet<String>,
    pool_set: BTreeSet<String>,
}

impl Selection {
    /// From validated lists (lowercase tags, no duplicates), in the order written.
    pub(crate) fn new(
        tags: Vec<String>,
        vmids: BTreeSet<u32>,
        pools: Vec<String>,
        exclude_tags: Vec<String>,
        exclude_vmids: BTreeSet<u32>,
    ) -> Selection {
        Selection {
            tag_set: tags.iter().cloned().collect(),
            exclude_tag_set: exclude_tags.iter().cloned().collect(),
            pool_set: pools.iter().cloned().collect(),
            tags,
            vmids,
            pools,
            exclude_tags,
            exclude_vmids,
            types: BTreeSet::from([GuestKind::Vm]),
        }
    }

    /// The same selection for these guest types (`types`; validation keeps it non-empty).
    pub(crate) fn with_types(mut self, types: BTreeSet<GuestKind>) -> Selection {
        self.types = types;
        self
    }

    /// Guest types managed.
    pub fn types(&self) -> &BTreeSet<GuestKind> {
        &self.types
    }

    /// Whether a guest of this kind, id, tags and pool is managed: its type is one of `types`
    /// and it [`matches`](Selection::matches).
    pub fn takes(&self, kind: GuestKind, vmid: u32, tags: &[String], pool: Option<&str>) -> bool {
        self.types.contains(&kind) && self.matches(vmid, tags, pool)
    }

    pub fn matches(&self, vmid: u32, tags: &[String], pool: Option<&str>) -> bool {
        let excluded =
            self.exclude_vmids.contains(&vmid) || any_tag_in(&self.exclude_tag_set, tags);
        let included = self.vmids.contains(&vmid)
            || any_tag_in(&self.tag_set, tags)
            || pool.is_some_and(|p| self.pool_set.contains(p));
        included && !excluded
    }

    /// Selected tags, lowercase.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    pub fn vmids(&self) -> &BTreeSet<u32> {
        &self.vmids
    }

    pub fn pools(&self) -> &[String] {
        &self.pools
    }

    /// Excluded tags, lowercase.
    pub fn exclude_tags(&self) -> &[String] {
        &self.exclude_tags
    }

    pub fn exclude_vmids(&self) -> &BTreeSet<u32> {
        &self.exclude_vmids
    }
}

/// `wanted` holds lowercase tags; `have` is as the API gives them.
fn any_tag_in(wanted: &BTreeSet<String>, have: &[String]) -> bool {
    have.iter().any(|h| {
        let h = h.trim();
        if h.bytes().any(|b| b.is_ascii_uppercase()) {
            wanted.contains(&h.to_ascii_lowercase())
        } else {
            wanted.contains(h)
        }
    })
}

/// `wanted` holds lowercase tags; `have` is as the API gives them.
fn any_tag(wanted: &[String], have: &[String]) -> bool {
    have.iter()
        .any(|h| wanted.iter().any(|w| w.eq_ignore_ascii_case(h.trim())))
}

/// One `[[override]]`: partial CPU and memory settings for the VMs it matches (any of its
/// `vmids`, `tags` or `pools`).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    vmids: BTreeSet<u32>,
    tags: Vec<String>,
    pools: Vec<String>,
    /// Guest types it is limited to (`None`: both).
    types: Option<BTreeSet<GuestKind>>,
    cpu: ResourceOverride,
    memory: ResourceOverride,
}

impl Override {
    /// Of the guest's types (when limited), and matching any of its vmids, tags or pools;
    /// with types but none of those, every guest of those types.
    pub fn matches(&self, kind: GuestKind, vmid: u32, tags: &[String], pool: Option<&str>) -> bool {
        if self.types.as_ref().is_some_and(|t| !t.contains(&kind)) {
            return false;
        }
        self.whole_types()
            || self.vmids.contains(&vmid)
            || any_tag(&self.tags, tags)
            || pool.is_some_and(|p| self.pools.iter().any(|q| q == p))
    }

    /// Limited to types and nothing else: every guest of those types.
    pub(crate) fn whole_types(&self) -> bool {
        self.types.is_some()
            && self.vmids.is_empty()
            && self.tags.is_empty()
            && self.pools.is_empty()
    }

    /// Guest types it is limited to (`None`: both).
    pub fn types(&self) -> Option<&BTreeSet<GuestKind>> {
        self.types.as_ref()
    }

    pub fn vmids(&self) -> &BTreeSet<u32> {
        &self.vmids
    }

    /// Tags, lowercase.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    pub fn pools(&self) -> &[String] {
        &self.pools
    }

    pub fn cpu(&self) -> &ResourceOverride {
        &self.cpu
    }

    pub fn memory(&self) -> &ResourceOverride {
        &self.memory
    }

    fn apply_to(&self, policy: &mut Policy) {
        self.cpu.apply_to(&mut policy.cpu);
        self.memory.apply_to(&mut policy.memory);
    }
}

/// The keys of one resource that an override sets (`None` = keep). Sizes are vCPUs or MiB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceOverride {
    pub enabled: Option<bool>,
    pub scale_up: Option<bool>,
    pub scale_down: Option<bool>,
    pub high: Option<f64>,
    pub low: Option<f64>,
    pub target: Option<f64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub up_after: Option<Duration>,
    pub down_after: Option<Duration>,
    pub cooldown_up: Option<Duration>,
    pub cooldown_down: Option<Duration>,
    pub max_step_up: Option<u64>,
    pub max_step_down: Option<u64>,
    pub saturated_factor: Option<f64>,
}

impl ResourceOverride {
    pub fn is_empty(&self) -> bool {
        *self == ResourceOverride::default()
    }

    /// Sets every key this override has on `p`.
    pub fn apply_to(&self, p: &mut ResourcePolicy) {
        fn set<T: Copy>(dst: &mut T, src: Option<T>) {
            if let Some(v) = src {
                *dst = v;
            }
        }
        set(&mut p.enabled, self.enabled);
        set(&mut p.scale_up, self.scale_up);
        set(&mut p.scale_down, self.scale_down);
        set(&mut p.high, self.high);
        set(&mut p.low, self.low);
        if self.target.is_some() {
            p.target = self.target;
        }
        set(&mut p.min, self.min);
        set(&mut p.max, self.max);
        set(&mut p.up_after, self.up_after);
        set(&mut p.down_after, self.down_after);
        set(&mut p.cooldown_up, self.cooldown_up);
        set(&mut p.cooldown_down, self.cooldown_down);
        set(&mut p.max_step_up, self.max_step_up);
        set(&mut p.max_step_down, self.max_step_down);
        set(&mut p.saturated_factor, self.saturated_factor);
    }
}

/// Something worth telling the admin that does not stop pvescale (e.g. an inline secret in a
/// file others can read). The caller decides how to print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(String);

impl Warning {
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thing wrong in the config: the key path (`policy.cpu.low`, `cluster[1].url`; empty for a
/// TOML syntax error outside any key), where it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub location: Option<Location>,
    pub message: String,
}

impl Problem {
    fn fmt_in(&self, path: &Path, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", path.display())?;
        if let Some(l) = self.location {
            write!(f, ":{}:{}", l.line, l.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why the config could not be loaded. Every message starts with the file path; parse and
/// validation problems add `line:column`, the key and the reason, compiler style:
/// `/etc/pvescale/pvescale.toml:12:7: policy.cpu.low: low (90) must be below high (80)`.
/// The binary maps every variant to exit code 78 (EX_CONFIG).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// TOML syntax, an unknown key, a value of the wrong type or format.
    #[error("{}", DisplayProblems(path, std::slice::from_ref(problem)))]
    Parse { path: PathBuf, problem: Problem },
    /// Values that do not fit together or are out of range; all of them, one a line.
    #[error("{}", DisplayProblems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Parse { path, .. }
            | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// The problems found (none for [`ConfigError::Read`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Parse { problem, .. } => std::slice::from_ref(problem),
            ConfigError::Invalid { problems, .. } => problems,
        }
    }

    /// The process exit code for a config error (sysexits EX_CONFIG).
    pub const EXIT_CODE: u8 = 78;
}

struct DisplayProblems<'a>(&'a Path, &'a [Problem]);

impl fmt::Display for DisplayProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            p.fmt_in(self.0, f)?;
        }
        Ok(())
    }
}

/// Reads and validates the config file, resolving secrets from the real environment.
pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
    load_with(path, &SystemEnv)
}

/// [`load`] with the environment as a parameter (for tests).
pub fn load_with(path: &Path, env: &dyn Env) -> Result<(Config, Vec<Warning>), ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let (text, meta) = read_config_file(path).map_err(read_err)?;
    use std::os::unix::fs::PermissionsExt;
    let (config, mut warnings) =
        validate::parse(&text, path, Some(meta.permissions().mode()), env)?;
    if let Some(why) = crate::fs_guard::Guard::current().others_could_change(&meta) {
        warnings.insert(
            0,
            Warning(format!(
                "{}: the config file is {why}: whoever can change it decides what pvescale                  does to your VMs and where it sends their secrets; make it root's (or                  pvescale's) and chmod go-w it",
                path.display()
            )),
        );
    }
    Ok((config, warnings))
}

/// Largest config file read: a config is a few KiB (the full example is 20), so 4 MiB is
/// thousands of overrides, and a larger file (a wrong path, or a list of millions of tags) is
/// refused before it costs seconds and gigabytes to parse.
pub const MAX_CONFIG_BYTES: u64 = 4 * crate::units::MIB;

/// The config file's text and metadata (of the file read, not of the name): a regular file
/// (a FIFO would block the run), at most [`MAX_CONFIG_BYTES`]. A link to it is fine.
fn read_config_file(path: &Path) -> io::Result<(String, std::fs::Metadata)> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let too_large = || {
        io::Error::other(format!(
            "larger than {} MiB (a config is a few KiB: is this the right file?)",
            MAX_CONFIG_BYTES / crate::units::MIB
        ))
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    Ok((text, meta))
}

/// Validates config text as if read from `path` (relative paths in it are taken from
/// `path`'s directory). No file-permission check.
pub fn parse_str(
    text: &str,
    path: &Path,
    env: &dyn Env,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    validate::parse(text, path, None, env)
}

#[cfg(test)]
mod tests;
