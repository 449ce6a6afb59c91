//! Readiness for live scaling: what keeps a resource from being changed live, and the exact
//! command that fixes it. The one home of these rules: the policy blocks on them, `status`
//! shows them, `check` prints the fix.

use super::{Resource, VmFacts};

/// What stands in the way of scaling one resource live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obstacle {
    /// `cpu` is not in `hotplug`.
    NoCpuHotplug,
    /// `memory` is not in `hotplug` (and maybe numa is off too).
    NoMemoryHotplug { numa_off: bool },
    /// Memory hotplug needs `numa: 1`.
    NoNuma,
}

impl Obstacle {
    /// A few words for the `status` table.
    pub fn short(self) -> &'static str {
        match self {
            Obstacle::NoCpuHotplug => "cpu: no hotplug",
            Obstacle::NoMemoryHotplug { .. } => "memory: no hotplug",
            Obstacle::NoNuma => "memory: no numa",
        }
    }
}

/// What keeps `resource` from being scaled live; `None` when nothing does or it is not known.
pub fn obstacle(facts: &VmFacts, resource: Resource) -> Option<Obstacle> {
    match resource {
        Resource::Cpu => (facts.cpu_hotplug == Some(false)).then_some(Obstacle::NoCpuHotplug),
        Resource::Memory => match (facts.memory_hotplug, facts.numa) {
            (Some(false), numa) => Some(Obstacle::NoMemoryHotplug {
                numa_off: numa != Some(true),
            }),
            (_, Some(false)) => Some(Obstacle::NoNuma),
            _ => None,
        },
    }
}

/// Whether a VM can be scaled live, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveScaling {
    Yes,
    /// Something stands in the way of at least one resource.
    No,
    /// Nothing known stands in the way, but the config was not read.
    Unknown,
}

/// The one-word form of [`summary`].
pub fn verdict(facts: &VmFacts) -> LiveScaling {
    let known =
        facts.cpu_hotplug.is_some() && facts.memory_hotplug.is_some() && facts.numa.is_some();
    if [Resource::Cpu, Resource::Memory]
        .iter()
        .any(|&r| obstacle(facts, r).is_some())
    {
        LiveScaling::No
    } else if known {
        LiveScaling::Yes
    } else {
        LiveScaling::Unknown
    }
}

/// `yes`, or what stands in the way (`?` where the config was not read).
pub fn summary(facts: &VmFacts) -> String {
    let mut problems = Vec::new();
    match (facts.cpu_hotplug, obstacle(facts, Resource::Cpu)) {
        (None, _) => problems.push("cpu: ?"),
        (_, Some(o)) => problems.push(o.short()),
        _ => {}
    }
    match obstacle(facts, Resource::Memory) {
        Some(o) => problems.push(o.short()),
        None if facts.memory_hotplug.is_none() || facts.numa.is_none() => {
            problems.push("memory: ?")
        }
        None => {}
    }
    if facts.windows == Some(true) {
        problems.push(GROW_ONLY);
    }
    match problems.as_slice() {
        [] => "yes".to_string(),
        [GROW_ONLY] => format!("yes, {GROW_ONLY}"),
        _ => problems.join("; "),
    }
}

/// What the status table says of a Windows guest: it takes vCPUs and memory live but never
/// gives them back.
pub const GROW_ONLY: &str = "grow only (Windows)";

/// The command that makes the VM ready: its own hotplug list (`features`, when known; else
/// Proxmox's default `network,disk,usb`) plus what is missing, and `--numa 1` where needed.
pub fn fix_command(vmid: u32, features: Option<&[String]>, add: &[&str], numa: bool) -> String {
    let mut list: Vec<String> = match features {
        Some(features) => features.to_vec(),
        None => ["network", "disk", "usb"].map(String::from).to_vec(),
    };
    for feature in add {
        if !list.iter().any(|f| f == feature) {
            list.push((*feature).to_string());
        }
    }
    let mut cmd = format!("qm set {vmid}");
    if !add.is_empty() {
        cmd.push_str(&format!(" --hotplug {}", list.join(",")));
    }
    if numa {
        cmd.push_str(" --numa 1");
    }
    cmd
}

/// Why `resource` is not scaled live, with the fix, as a decision's reason says it.
pub fn blocked_reason(facts: &VmFacts, resource: Resource) -> Option<String> {
    let features = facts.hotplug_features.as_deref();
    // What the VM has, plus what this resource needs, in Proxmox's order.
    let with = |needed: Resource| -> Vec<&'static str> {
        let mut add = Vec::new();
        if facts.cpu_hotplug == Some(true) || needed == Resource::Cpu {
            add.push("cpu");
        }
        if facts.memory_hotplug == Some(true) || needed == Resource::Memory {
            add.push("memory");
        }
        add
    };
    Some(match obstacle(facts, resource)? {
        Obstacle::NoCpuHotplug => format!(
            "cpu hotplug is off: {}",
            fix_command(facts.vmid, features, &with(Resource::Cpu), false)
        ),
        Obstacle::NoMemoryHotplug { numa_off } => format!(
            "memory hotplug is off: {} (then a cold restart)",
            fix_command(facts.vmid, features, &with(Resource::Memory), numa_off)
        ),
        Obstacle::NoNuma => format!(
            "memory hotplug needs numa: {} (then a cold restart)",
            fix_command(facts.vmid, None, &[], true)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_agrees_with_the_summary() {
        let mut f = VmFacts::new(101, "pve1", 2, 4096);
        assert_eq!(
            (verdict(&f), summary(&f).as_str()),
            (LiveScaling::Unknown, "cpu: ?; memory: ?")
        );
        f.cpu_hotplug = Some(false);
        assert_eq!(
            verdict(&f),
            LiveScaling::No,
            "an obstacle outweighs an unknown"
        );
        f.cpu_hotplug = Some(true);
        f.memory_hotplug = Some(true);
        f.numa = Some(true);
        assert_eq!(
            (verdict(&f), summary(&f).as_str()),
            (LiveScaling::Yes, "yes")
        );
        f.numa = Some(false);
        assert_eq!(
            (verdict(&f), summary(&f).as_str()),
            (LiveScaling::No, "memory: no numa")
        );
        f.windows = Some(true);
        assert_eq!(summary(&f), "memory: no numa; grow only (Windows)");
        f.numa = Some(true);
        assert_eq!(
            (verdict(&f), summary(&f).as_str()),
            (LiveScaling::Yes, "yes, grow only (Windows)")
        );
    }

    #[test]
    fn the_fix_keeps_the_vms_own_hotplug_list() {
        let mut f = VmFacts::new(101, "pve1", 2, 4096);
        f.cpu_hotplug = Some(false);
        f.memory_hotplug = Some(true);
        f.numa = Some(true);
        f.hotplug_features = Some(vec!["disk".into(), "memory".into()]);
        assert_eq!(
            blocked_reason(&f, Resource::Cpu).as_deref(),
            Some("cpu hotplug is off: qm set 101 --hotplug disk,memory,cpu")
        );
        assert_eq!(blocked_reason(&f, Resource::Memory), None);
        assert_eq!(summary(&f), "cpu: no hotplug");
        // Unknown list: Proxmox's default set.
        f.hotplug_features = None;
        assert_eq!(
            blocked_reason(&f, Resource::Cpu).as_deref(),
            Some("cpu hotplug is off: qm set 101 --hotplug network,disk,usb,cpu,memory")
        );
        f.numa = Some(false);
        assert_eq!(
            blocked_reason(&f, Resource::Memory).as_deref(),
            Some("memory hotplug needs numa: qm set 101 --numa 1 (then a cold restart)")
        );
        assert_eq!(summary(&f), "cpu: no hotplug; memory: no numa");
        assert_eq!(summary(&VmFacts::new(1, "n", 1, 1024)), "cpu: ?; memory: ?");
    }
}
