//! Where a VM's memory figure comes from: the guest's own (balloon statistics: pvescale may
//! act on it) or a host-side estimate (it follows every increase: never acted on). The one
//! home of these rules; `engine` and the `rrddata` history reader ask here.

use crate::policy::MemorySource;
use crate::pve::Client;
use crate::pve::types::{VmConfig, VmResource};

/// What `cluster/resources` tells: on PVE 9 `memhost` differs from `mem` exactly when `mem`
/// is the guest's own figure. `None` where the row has no `memhost` (PVE 8).
pub fn from_resource(vm: &VmResource) -> Option<MemorySource> {
    // A container's `mem` is its own cgroup's use without page cache (pve-container LXC.pm
    // `vmstatus`, from `get_memory_stat`): the guest's figure, always.
    if vm.kind == crate::guest::GuestKind::Ct {
        return Some(MemorySource::Guest);
    }
    let (mem, memhost) = (vm.mem?, vm.memhost?);
    Some(if mem != memhost {
        MemorySource::Guest
    } else {
        MemorySource::Host
    })
}

/// What the config tells: without a balloon device (`balloon: 0`) the figure is host-side
/// for sure; otherwise the config alone does not tell.
pub fn from_config(config: &VmConfig) -> Option<MemorySource> {
    (config.balloon == Some(0)).then_some(MemorySource::Host)
}

/// What PVE 9 `rrddata` points tell: any point where `mem` and `memhost` differ by more than
/// 1 MiB means `mem` is the guest's own figure. `pairs` are (mem, memhost) in MiB.
pub fn from_memhost_pairs(pairs: &[(f64, f64)]) -> Option<MemorySource> {
    if pairs.is_empty() {
        return None;
    }
    Some(
        if pairs.iter().any(|(used, host)| (used - host).abs() > 1.0) {
            MemorySource::Guest
        } else {
            MemorySource::Host
        },
    )
}

/// Asks the running VM whether its balloon driver reports statistics (one `status/current`
/// call): then its memory figure is the guest's own, else a host-side estimate. The only
/// place that asks; callers ask only when the cheaper facts above do not tell.
pub fn probe(client: &Client, vm: &VmResource) -> MemorySource {
    match client.vm_status_current(&vm.node, vm.vmid) {
        Ok(status) if status.has_guest_memory_stats() => MemorySource::Guest,
        Ok(_) => MemorySource::Host,
        Err(e) => {
            log::debug!("VM {}: status/current failed: {e}", vm.vmid);
            MemorySource::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cheap_facts_tell_where_they_can() {
        let row = |mem: Option<u64>, memhost: Option<u64>| VmResource {
            kind: crate::guest::GuestKind::Vm,
            vmid: 101,
            node: "pve1".into(),
            name: None,
            status: crate::pve::types::VmStatus::Running,
            cpu: None,
            maxcpu: None,
            mem,
            maxmem: None,
            memhost,
            uptime: None,
            template: false,
            tags: Vec::new(),
            pool: None,
            lock: None,
            hastate: None,
        };
        assert_eq!(
            from_resource(&row(Some(1), Some(2))),
            Some(MemorySource::Guest)
        );
        assert_eq!(
            from_resource(&row(Some(2), Some(2))),
            Some(MemorySource::Host)
        );
        assert_eq!(
            from_resource(&row(Some(2), None)),
            None,
            "PVE 8 does not tell"
        );
        let config = |balloon: u64| -> VmConfig {
            serde_json::from_value(serde_json::json!({"digest": "d", "balloon": balloon}))
                .expect("config")
        };
        assert_eq!(from_config(&config(0)), Some(MemorySource::Host));
        assert_eq!(from_config(&config(2048)), None);
        assert_eq!(
            from_memhost_pairs(&[(100.0, 100.5)]),
            Some(MemorySource::Host)
        );
        assert_eq!(
            from_memhost_pairs(&[(100.0, 900.0)]),
            Some(MemorySource::Guest)
        );
        assert_eq!(from_memhost_pairs(&[]), None);
    }
}
