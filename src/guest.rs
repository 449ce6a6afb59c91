//! The two kinds of guest Proxmox runs, and what differs between them for pvescale.
//!
//! VM and container ids share one namespace in Proxmox (a vmid is unique cluster-wide, pve-cluster
//! `vmlist`), so state, history and reports stay keyed by vmid; the kind travels beside it.

use serde::{Deserialize, Serialize};

/// A QEMU VM or an LXC container. Written `vm`/`ct` in the config, JSON, history and metrics
/// (the words `pct` and the GUI use); Proxmox's own `qemu`/`lxc` only appear in API paths.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    #[default]
    Vm,
    Ct,
}

impl GuestKind {
    pub const ALL: [GuestKind; 2] = [GuestKind::Vm, GuestKind::Ct];

    /// `vm` or `ct`.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Vm => "vm",
            GuestKind::Ct => "ct",
        }
    }

    /// The path segment of its API (`/nodes/{node}/qemu/...`, `/nodes/{node}/lxc/...`), also
    /// the prefix of its ids in `cluster/resources` and the metrics export.
    pub fn api_segment(self) -> &'static str {
        match self {
            GuestKind::Vm => "qemu",
            GuestKind::Ct => "lxc",
        }
    }

    /// `vm` / `ct` as written in the config; anything else is `None`.
    pub fn parse(text: &str) -> Option<GuestKind> {
        match text {
            "vm" => Some(GuestKind::Vm),
            "ct" => Some(GuestKind::Ct),
            _ => None,
        }
    }

    /// The config key that sizes CPUs: `vcpus` (hotplugged vCPUs within sockets × cores) on a
    /// VM; `cores` on a container (its cpuset, enacted by pvestatd within ~10 s).
    pub fn cpu_key(self) -> &'static str {
        match self {
            GuestKind::Vm => "vcpus",
            GuestKind::Ct => "cores",
        }
    }
}

impl std::fmt::Display for GuestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_name_the_api() {
        for kind in GuestKind::ALL {
            assert_eq!(GuestKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
        }
        assert_eq!(GuestKind::parse("lxc"), None);
        assert_eq!(GuestKind::Ct.api_segment(), "lxc");
        assert_eq!(GuestKind::Ct.cpu_key(), "cores");
    }
}
