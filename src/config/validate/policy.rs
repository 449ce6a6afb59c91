//! `[policy]`, `[policy.cpu]`, `[policy.memory]`, `[host]` and `[[override]]`, with the
//! rules between their keys.

use super::*;
use crate::guest::GuestKind;

/// The smallest container memory pvescale sizes to (pve-container allows 16 MiB).
const CT_MIN_MEMORY_MIB: u64 = 64;

impl Validator<'_> {
    pub(super) fn policy(&mut self, raw: &RawConfig) -> Policy {
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
        let cpu = self.resource_override(&cpu_key, &p.cpu, Resource::Cpu, false);
        cpu.apply_to(&mut policy.cpu);
        self.check_resource(&cpu_key, &policy.cpu, Resource::Cpu, "");
        let mem_key = key.key("memory");
        let memory = self.resource_override(&mem_key, &p.memory, Resource::Memory, false);
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
    pub(super) fn percent(&mut self, key: &KeyPath, v: f64) -> bool {
        let ok = v > 0.0 && v <= 100.0;
        if !ok {
            self.problem(
                key,
                format!("{v} is out of range: a percentage above 0 and at most 100"),
            );
        }
        ok
    }

    /// `containers_only`: an override limited to containers, whose memory has no DIMM grid
    /// (sizes from 64 MiB, steps from 1 MiB).
    pub(super) fn resource_override<A: Copy + Into<u64>>(
        &mut self,
        key: &KeyPath,
        raw: &RawResource<A>,
        resource: Resource,
        containers_only: bool,
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
        let (least_size, least_step, show): (u64, u64, fn(u64) -> String) =
            match (resource, containers_only) {
                (Resource::Cpu, _) => (1, 1, |n| format!("{n} vCPUs")),
                (Resource::Memory, true) => (CT_MIN_MEMORY_MIB, 1, fmt_mib),
                (Resource::Memory, false) => (MIN_HOTPLUG_MEMORY_MIB, MIN_MEMORY_STEP_MIB, fmt_mib),
            };
        let why_size = match (resource, containers_only) {
            (Resource::Cpu, _) => "a VM needs at least 1 vCPU",
            (Resource::Memory, true) => "pvescale sizes containers from 64 MiB",
            (Resource::Memory, false) => "Proxmox VE memory hotplug needs at least 1 GiB",
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
    pub(super) fn check_resource(
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

    pub(super) fn override_(
        &mut self,
        i: usize,
        raw: &RawOverride,
        base: &Policy,
    ) -> Option<Override> {
        let key = root().key("override").index(i);
        let before = self.problems.len();
        let vmids = self.vmids(&key.key("vmids"), &raw.vmids);
        let tags = self.tags(&key.key("tags"), &raw.tags);
        let pools = self.pools(&key.key("pools"), &raw.pools);
        let types = match raw.types.as_deref() {
            Some(raw_types) => Some(self.guest_types(&key.key("types"), Some(raw_types))?),
            None => None,
        };
        if raw.vmids.is_empty() && raw.tags.is_empty() && raw.pools.is_empty() && types.is_none() {
            self.problem(
                &key,
                "an override needs vmids, tags, pools or types to say which guests it applies \
                 to (for all of them, set [policy] instead)",
            );
        }
        if raw.cpu.is_empty() && raw.memory.is_empty() {
            self.problem(
                &key,
                "changes nothing: set cpu = { ... } and/or memory = { ... }",
            );
        }
        let cts = types.as_ref().is_some_and(|t| !t.contains(&GuestKind::Vm));
        let cpu = self.resource_override(&key.key("cpu"), &raw.cpu, Resource::Cpu, cts);
        let memory = self.resource_override(&key.key("memory"), &raw.memory, Resource::Memory, cts);
        if self.problems.len() > before {
            return None;
        }
        let o = Override {
            vmids,
            tags,
            pools,
            types,
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
    pub(super) fn override_combinations(&mut self, overrides: &[Override], base: &Policy) {
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
pub(super) fn resource_rule_violations(
    p: &ResourcePolicy,
    resource: Resource,
) -> Vec<(&'static str, String)> {
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
pub(super) fn can_match_one_vm(members: &[&Override]) -> bool {
    // They must share a guest type.
    let shared_type = GuestKind::ALL.iter().any(|k| {
        members
            .iter()
            .all(|o| o.types.as_ref().is_none_or(|t| t.contains(k)))
    });
    if !shared_type {
        return false;
    }
    // An override of whole types matches any id and pool, like a tag could.
    let tagless: Vec<&&Override> = members
        .iter()
        .filter(|o| o.tags.is_empty() && !o.whole_types())
        .collect();
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
