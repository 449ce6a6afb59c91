//! Which node of a cluster acts: installed on every node, exactly one pvescale scales the
//! cluster's VMs. Pure: it decides from what `cluster/status` and the HA manager's status say.
//!
//! The HA manager's master acts where HA is in use and its status is fresh (pve-ha-manager
//! treats a status older than 30 s as "old timestamp - dead?": the file outlives an idle
//! manager) and that node is online; otherwise the online node with the lowest node id. Only
//! with quorum: without it nothing is done anywhere.

use crate::pve::types::{ClusterStatusRow, HaManagerStatus};

/// A master's status older than this is not trusted (pve-ha-manager `$timestamp_to_status`).
pub const HA_STATUS_FRESH_SECS: u64 = 30;

/// What this run is for one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Act; `why` says which rule chose this node.
    Active { why: String },
    /// Another node acts: do nothing.
    Standby { active: String, why: String },
    /// No quorum: nothing is done anywhere.
    NoQuorum,
}

/// The role of node `local` in the cluster that `status` describes, at time `now`.
pub fn role(
    local: &str,
    status: &[ClusterStatusRow],
    ha: Option<&HaManagerStatus>,
    now: u64,
) -> Role {
    let quorate = status
        .iter()
        .find(|r| r.kind == "cluster")
        .is_none_or(|r| r.quorate);
    if !quorate {
        return Role::NoQuorum;
    }
    let online = |name: &str| {
        status
            .iter()
            .any(|r| r.kind == "node" && r.online && r.name.as_deref() == Some(name))
    };
    let master = ha.and_then(|h| {
        let m = &h.manager_status;
        let fresh = m
            .timestamp
            .is_some_and(|t| now.saturating_sub(t) <= HA_STATUS_FRESH_SECS && t <= now + 2);
        m.master_node.clone().filter(|n| fresh && online(n))
    });
    let (active, why) = match master {
        Some(master) => (master, "the HA manager's master".to_string()),
        None => match status
            .iter()
            .filter(|r| r.kind == "node" && r.online)
            .filter_map(|r| Some((r.nodeid?, r.name.clone()?)))
            .min()
        {
            Some((id, name)) => (
                name,
                format!("the online node with the lowest node id ({id})"),
            ),
            None => return Role::NoQuorum,
        },
    };
    if active == local {
        Role::Active { why }
    } else {
        Role::Standby { active, why }
    }
}

/// The node this runs on: the host name up to its first dot, as Proxmox VE names nodes.
pub fn host_node_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = text.trim().split('.').next()?.to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pve::types::HaManager;

    fn status(quorate: bool, nodes: &[(&str, u64, bool)]) -> Vec<ClusterStatusRow> {
        let mut rows = vec![ClusterStatusRow {
            kind: "cluster".into(),
            name: Some("lab".into()),
            quorate,
            nodeid: None,
            online: false,
            local: false,
        }];
        rows.extend(nodes.iter().map(|(name, id, online)| ClusterStatusRow {
            kind: "node".into(),
            name: Some(name.to_string()),
            quorate: false,
            nodeid: Some(*id),
            online: *online,
            local: false,
        }));
        rows
    }

    fn ha(master: &str, timestamp: u64) -> HaManagerStatus {
        HaManagerStatus {
            manager_status: HaManager {
                master_node: Some(master.into()),
                timestamp: Some(timestamp),
            },
        }
    }

    const NOW: u64 = 1_000_000;

    #[test]
    fn the_lowest_online_node_id_acts_without_ha() {
        let s = status(
            true,
            &[("pve1", 1, false), ("pve2", 2, true), ("pve3", 3, true)],
        );
        assert!(matches!(role("pve2", &s, None, NOW), Role::Active { .. }));
        assert_eq!(
            role("pve3", &s, None, NOW),
            Role::Standby {
                active: "pve2".into(),
                why: "the online node with the lowest node id (2)".into()
            }
        );
    }

    #[test]
    fn a_fresh_online_ha_master_acts_and_a_stale_one_does_not() {
        let s = status(true, &[("pve1", 1, true), ("pve2", 2, true)]);
        let fresh = ha("pve2", NOW - 10);
        assert!(matches!(
            role("pve2", &s, Some(&fresh), NOW),
            Role::Active { .. }
        ));
        assert!(matches!(
            role("pve1", &s, Some(&fresh), NOW),
            Role::Standby { .. }
        ));
        // The file outlives an idle manager: an old timestamp is not a master.
        let stale = ha("pve2", NOW - 600);
        assert!(matches!(
            role("pve1", &s, Some(&stale), NOW),
            Role::Active { .. }
        ));
        // A master that is offline is not either.
        let s = status(true, &[("pve1", 1, true), ("pve2", 2, false)]);
        assert!(matches!(
            role("pve1", &s, Some(&fresh), NOW),
            Role::Active { .. }
        ));
    }

    #[test]
    fn without_quorum_nobody_acts() {
        let s = status(false, &[("pve1", 1, true), ("pve2", 2, true)]);
        assert_eq!(role("pve1", &s, None, NOW), Role::NoQuorum);
        assert_eq!(
            role("pve2", &s, Some(&ha("pve2", NOW)), NOW),
            Role::NoQuorum
        );
    }
}
