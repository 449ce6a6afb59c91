//! The report of one VM as a person or a program sees it.

use super::*;
use crate::record::{ActionKind, MemorySourceShown};

pub(super) fn vm_report(cluster: &str, plan: &VmPlan, now: u64, mode: Mode) -> VmReport {
    let resource_report = |resource: Resource| {
        let decision = plan.decision.resource(resource);
        let (from, to) = decision
            .change()
            .map_or((None, None), |(f, t)| (Some(f), Some(t)));
        let outcome = plan
            .outcome
            .iter()
            .find(|(r, _)| *r == resource)
            .map(|(_, written)| written.clone());
        ResourceReport {
            action: ActionKind::of(&decision.action),
            blocked_by: match decision.action {
                Action::Blocked(by) => Some(by),
                _ => None,
            },
            from,
            to,
            reason: decision.reason.clone(),
            outcome,
            wait: wait_left(plan, resource, now),
            window: decision.by_window.clone(),
        }
    };
    let failed = plan.error.is_some() || plan.outcome.iter().any(|(_, o)| o.is_failure());
    VmReport {
        cluster: cluster.to_string(),
        node: plan.resource.node.clone(),
        vmid: plan.resource.vmid,
        kind: plan.resource.kind,
        name: plan.resource.name.clone().unwrap_or_default(),
        status: plan.resource.status.as_str().to_string(),
        vcpus: u64::from(plan.facts.vcpus),
        max_vcpus: plan.facts.max_vcpus.map(u64::from),
        memory_mib: plan.facts.memory_mib,
        cpu_percent: plan.util.cpu.map(|c| round1(c * 100.0)),
        memory_percent: plan.util.memory.map(|m| round1(m * 100.0)),
        memory_source: match plan.util.memory_source {
            MemorySource::Guest if plan.config.is_some() || mode.is_status() => {
                MemorySourceShown::Guest
            }
            MemorySource::Guest => MemorySourceShown::GuestAssumed,
            MemorySource::Host => MemorySourceShown::Host,
            MemorySource::Unknown => MemorySourceShown::Unknown,
        },
        cpu_pressure_percent: plan
            .facts
            .pressure
            .and_then(|p| p.cpu_some)
            .map(|p| round1(p * 100.0)),
        memory_pressure_percent: plan
            .facts
            .pressure
            .and_then(|p| p.memory_some)
            .map(|p| round1(p * 100.0)),
        readiness: policy::readiness::summary(&plan.facts),
        live_scaling: policy::readiness::verdict(&plan.facts),
        cpu: resource_report(Resource::Cpu),
        memory: resource_report(Resource::Memory),
        error: plan.error.clone(),
        data_age_secs: plan.data_age,
        notes: plan.notes.clone(),
        windows: plan.policy.windows.clone(),
        failed,
    }
}

/// Cooldown or back-off still running for a resource, e.g. `cooldown: up 1m, down 9m`.
fn wait_left(plan: &VmPlan, resource: Resource, now: u64) -> Option<String> {
    let rs = plan.state.resource(resource);
    let rp = plan.policy.resource(resource);
    let mut parts = Vec::new();
    if let Some(change) = &rs.last_change {
        let left = |cooldown: std::time::Duration| {
            (change.at + cooldown.as_secs())
                .checked_sub(now)
                .filter(|left| *left > 0)
        };
        let cooldowns: Vec<String> = [
            ("up", left(rp.cooldown_up)),
            ("down", left(rp.cooldown_down)),
        ]
        .into_iter()
        .filter_map(|(dir, left)| left.map(|l| format!("{dir} {}", policy::fmt_duration(l))))
        .collect();
        if !cooldowns.is_empty() {
            parts.push(format!("cooldown: {}", cooldowns.join(", ")));
        }
    }
    for (direction, backoff) in [
        (Direction::Up, rs.backoff_up.as_ref()),
        (Direction::Down, rs.backoff_down.as_ref()),
    ] {
        if let Some(b) = backoff.filter(|b| b.until > now) {
            parts.push(format!(
                "back-off ({direction}) {}",
                policy::fmt_duration(b.until - now)
            ));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
