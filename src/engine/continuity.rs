//! Continuity across a failover: a node that takes over has no state, or an old one, and
//! must not change a VM again within the cooldown of a change another node (or an admin,
//! through the API) made. Proxmox keeps every asynchronous config write as a `qmconfig` task
//! in the node's task index; reading it, one request per node, restores the cooldowns.
//!
//! Read only where it matters: when this cluster's state is missing or older than the longest
//! cooldown (a run a minute keeps its own record otherwise). `GET /nodes/{node}/tasks` reads the
//! node's full index; `GET /cluster/tasks` keeps only the newest ~25 finished tasks per node
//! and would lose ours on a busy node (pve-manager Cluster.pm, pve-common RESTEnvironment).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::policy::{Direction, Resource};
use crate::pve::Client;
use crate::pve::parallel::{DEFAULT_PARALLELISM, map_bounded};
use crate::pve::types::{NodeResource, VmResource};
use crate::state::{Change, VmState};

/// At most this many config tasks per node are asked for: a cooldown's worth on any node.
const TASK_LIMIT: u32 = 1000;

/// Whether this cluster's state is too old to know the cooldowns in force: no VM in it, or
/// none seen within `longest_cooldown`.
pub(super) fn state_is_stale(
    cluster_state: &BTreeMap<u32, VmState>,
    now: u64,
    longest_cooldown: Duration,
) -> bool {
    let newest = cluster_state.values().map(|vm| vm.last_seen).max();
    newest.is_none_or(|seen| now.saturating_sub(seen) > longest_cooldown.as_secs())
}

/// Reads the config tasks of the online nodes since `now - longest_cooldown`; returns each
/// VM's newest successful config change, and the nodes that could not be read.
pub(super) fn read_config_changes(
    client: &Client,
    nodes: &[NodeResource],
    now: u64,
    longest_cooldown: Duration,
) -> (BTreeMap<u32, u64>, Vec<String>) {
    let since = now.saturating_sub(longest_cooldown.as_secs());
    let online: Vec<&NodeResource> = nodes.iter().filter(|n| n.status == "online").collect();
    let lists = map_bounded(&online, DEFAULT_PARALLELISM, |node| {
        client.node_config_tasks(&node.node, since, TASK_LIMIT)
    });
    let mut newest: BTreeMap<u32, u64> = BTreeMap::new();
    let mut unread = Vec::new();
    for (node, list) in online.iter().zip(lists) {
        match list {
            Ok(tasks) => {
                for (vmid, at) in tasks.iter().filter_map(|t| t.config_change()) {
                    let entry = newest.entry(vmid).or_insert(at);
                    *entry = (*entry).max(at);
                }
            }
            Err(e) => unread.push(format!("{}: {e}", node.node)),
        }
    }
    (newest, unread)
}

/// Makes each managed VM's last change at least as recent as its newest config task, for
/// both resources (a task does not say which keys it wrote; cooldowns do not depend on the
/// direction). Returns the VMs whose cooldown this started.
pub(super) fn adopt_config_changes(
    cluster_state: &mut BTreeMap<u32, VmState>,
    managed: &[&VmResource],
    changes: &BTreeMap<u32, u64>,
    now: u64,
) -> Vec<u32> {
    let mut adopted = Vec::new();
    for vm in managed {
        let Some(&at) = changes.get(&vm.vmid) else {
            continue;
        };
        let at = at.min(now);
        let state = cluster_state.entry(vm.vmid).or_default();
        let mut newer = false;
        for resource in [Resource::Cpu, Resource::Memory] {
            let size = match resource {
                Resource::Cpu => vm.maxcpu.map_or(0, |c| c.round() as u64),
                Resource::Memory => vm.maxmem.map_or(0, |b| b / crate::units::MIB),
            };
            let rs = state.resource_mut(resource);
            if rs.last_change.as_ref().is_none_or(|c| c.at < at) {
                rs.last_change = Some(Change {
                    at,
                    direction: Direction::Up,
                    from: size,
                    to: size,
                });
                newer = true;
            }
        }
        if newer {
            adopted.push(vm.vmid);
        }
    }
    adopted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pve::types::VmStatus;

    fn vm(vmid: u32) -> VmResource {
        VmResource {
            kind: crate::guest::GuestKind::Vm,
            vmid,
            node: "pve1".into(),
            name: None,
            status: VmStatus::Running,
            cpu: None,
            maxcpu: Some(4.0),
            mem: None,
            maxmem: Some(4096 * crate::units::MIB),
            memhost: None,
            uptime: None,
            template: false,
            tags: Vec::new(),
            pool: None,
            lock: None,
            hastate: None,
        }
    }

    #[test]
    fn a_missing_or_old_state_is_stale_a_recent_one_is_not() {
        let cooldown = Duration::from_secs(600);
        let mut state = BTreeMap::new();
        assert!(state_is_stale(&state, 10_000, cooldown));
        state.insert(
            101,
            VmState {
                last_seen: 9_000,
                ..VmState::default()
            },
        );
        assert!(state_is_stale(&state, 10_000, cooldown));
        state.get_mut(&101).expect("101").last_seen = 9_500;
        assert!(!state_is_stale(&state, 10_000, cooldown));
    }

    #[test]
    fn a_newer_task_starts_a_cooldown_an_older_one_does_not() {
        let (a, b, c) = (vm(101), vm(102), vm(103));
        let managed = [&a, &b, &c];
        let mut state = BTreeMap::new();
        let mut known = VmState::default();
        known.cpu.last_change = Some(Change {
            at: 900,
            direction: Direction::Up,
            from: 2,
            to: 4,
        });
        known.memory.last_change = known.cpu.last_change.clone();
        state.insert(102, known);
        // 101: changed by another node; 102: our own record is newer; 104: not managed.
        let changes = BTreeMap::from([(101, 950), (102, 800), (104, 990)]);
        assert_eq!(
            adopt_config_changes(&mut state, &managed, &changes, 1000),
            vec![101]
        );
        let change = state[&101].cpu.last_change.as_ref().expect("a change");
        assert_eq!((change.at, change.from, change.to), (950, 4, 4));
        assert_eq!(
            state[&101]
                .memory
                .last_change
                .as_ref()
                .map(|c| (c.at, c.to)),
            Some((950, 4096))
        );
        assert_eq!(
            state[&102].cpu.last_change.as_ref().map(|c| c.at),
            Some(900)
        );
        assert!(!state.contains_key(&103) && !state.contains_key(&104));
    }
}
