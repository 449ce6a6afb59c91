//! Settling writes: what an interrupted earlier write left, and what this run's writes did.

use super::*;
use crate::record::WriteOutcome;
use crate::state::key_of;

/// An earlier run started a write and did not see it end (killed, or the task outlived
/// its wait). What went live is recorded as a change; what was left pending is reverted,
/// so that nothing of ours waits for the VM's next reboot.
pub(super) fn settle_interrupted_write(
    client: &Client,
    plan: &mut VmPlan,
    prev: &mut VmState,
    read: &mut VmRead,
    mode: Mode,
    now: u64,
) {
    let Some(in_flight) = prev.in_flight.clone() else {
        return;
    };
    let vmid = plan.resource.vmid;
    let stuck: Vec<&str> = in_flight
        .write
        .keys()
        .into_iter()
        .filter(|key| read.pending.iter().any(|p| p.key == *key && p.is_pending()))
        .collect();
    if !stuck.is_empty() {
        if mode.writes() {
            let undo = apply::Undo {
                change: &in_flight.write,
                balloon_before: in_flight.balloon_mib_before,
            };
            match undo.run(client, &plan.resource.node, vmid, &read.pending) {
                Ok(done) => {
                    let mut note = format!(
                        "{} left pending by an interrupted earlier write",
                        stuck.join(", ")
                    );
                    if !done.reverted.is_empty() {
                        note = format!(
                            "reverted {} left pending by an interrupted earlier write",
                            done.reverted.join(", ")
                        );
                    }
                    if let Some(balloon) = done.balloon_restored {
                        note.push_str(&format!("; balloon floor put back to {balloon} MiB"));
                    }
                    if !done.foreign.is_empty() {
                        note.push_str(&format!(
                            "; {} pending with a value that is not pvescale's: left as it is",
                            done.foreign.join(", ")
                        ));
                    }
                    plan.notes.push(note);
                    read.pending
                        .retain(|p| !done.reverted.contains(&p.key.as_str()));
                    // The undo changed the digest: a write in this run needs the new one.
                    match client.vm_config_current(&plan.resource.node, vmid) {
                        Ok(config) => read.config = config,
                        Err(e) => {
                            plan.error = Some(format!("re-reading the config failed: {e}"));
                            return;
                        }
                    }
                }
                Err(e) => {
                    plan.error = Some(format!(
                        "could not revert {} left pending by an earlier write: {e}",
                        stuck.join(", ")
                    ));
                    return;
                }
            }
        } else {
            plan.notes.push(format!(
                "{} left pending by an interrupted earlier write: the next run reverts it",
                stuck.join(", ")
            ));
            // Ours, not someone else's: don't let it block the plan.
            read.pending.retain(|p| !stuck.contains(&p.key.as_str()));
        }
    }
    let went_live = [
        (
            Resource::Cpu,
            in_flight.write.vcpus,
            in_flight.vcpus_before,
            read.config.vcpus(),
        ),
        (
            Resource::Memory,
            in_flight.write.memory_mib,
            in_flight.memory_mib_before,
            read.config.memory.unwrap_or(in_flight.memory_mib_before),
        ),
    ];
    for (resource, target, before, now_value) in went_live {
        if target.is_some() && now_value != before {
            let direction = if now_value > before {
                Direction::Up
            } else {
                Direction::Down
            };
            prev.record_change(resource, direction, before, now_value, in_flight.at);
            plan.notes.push(format!(
                "an interrupted earlier write did go live: {resource} {before} → {now_value}"
            ));
        }
    }
    // A key that stayed pending was not taken live: back off as after any refusal.
    for (resource, target, before) in [
        (Resource::Cpu, in_flight.write.vcpus, in_flight.vcpus_before),
        (
            Resource::Memory,
            in_flight.write.memory_mib,
            in_flight.memory_mib_before,
        ),
    ] {
        let key = key_of(resource);
        let Some(target) = target else { continue };
        if stuck.contains(&key) && target != before {
            let direction = if target > before {
                Direction::Up
            } else {
                Direction::Down
            };
            let signature = ConfigSignature {
                vcpus: u32::try_from(read.config.vcpus()).unwrap_or(u32::MAX),
                memory_mib: read.config.memory.unwrap_or(before),
                digest: None,
            };
            prev.record_refusal(
                resource,
                direction,
                now,
                plan.policy.backoff,
                signature,
                format!("{key} stayed pending after an interrupted write (not applied live)"),
            );
        }
    }
    if mode.writes() {
        prev.in_flight = None;
    }
}

/// Writes what happened into the VM's state and report.
pub(super) fn record_outcome(plan: &mut VmPlan, outcome: Outcome, now: u64) {
    // Settled one way or another, except a task still running: the next run settles that.
    if !matches!(outcome, Outcome::Unsettled(_)) {
        plan.state.in_flight = None;
    }
    let changes: Vec<(Resource, Direction, u64, u64)> = plan
        .decision
        .changes()
        .filter_map(|d| {
            let (from, to) = d.change()?;
            Some((d.resource, d.direction()?, from, to))
        })
        .collect();
    // The sizes the VM has after this write, which a back-off is tied to: what went live,
    // what a refusal left (part of an unplug may be done), else what it had.
    let refused = |resource: Resource| match &outcome {
        Outcome::Refused { keys, .. } => {
            keys.iter().any(|k| k == key_of(resource))
                || (resource == Resource::Memory && keys.iter().any(|k| k == "balloon"))
        }
        _ => false,
    };
    let size_after = |resource: Resource, before: u64| {
        let decided = plan.decision.resource(resource).change().map(|(_, to)| to);
        match (&outcome, decided) {
            (Outcome::Refused { vcpus_now, .. }, _)
                if resource == Resource::Cpu && refused(resource) =>
            {
                vcpus_now.unwrap_or(before)
            }
            (Outcome::Refused { memory_mib_now, .. }, _) if refused(resource) => {
                memory_mib_now.unwrap_or(before)
            }
            (Outcome::Applied | Outcome::Refused { .. }, Some(to)) => to,
            _ => before,
        }
    };
    let signature_after = ConfigSignature {
        vcpus: u32::try_from(size_after(Resource::Cpu, u64::from(plan.facts.vcpus)))
            .unwrap_or(u32::MAX),
        memory_mib: size_after(Resource::Memory, plan.facts.memory_mib),
        digest: None,
    };
    for (resource, direction, from, to) in changes {
        let written = match &outcome {
            Outcome::Applied => {
                plan.state.record_change(resource, direction, from, to, now);
                WriteOutcome::Applied
            }
            Outcome::Refused {
                host_max_memory_mib: Some(host_max),
                ..
            } if resource == Resource::Memory && refused(resource) => {
                // Not the guest's refusal but the host's limit: remember it and stay below
                // it from now on, instead of a refusal retried every back-off period.
                plan.state.host_max_memory_mib = Some(*host_max);
                WriteOutcome::HostLimit { max_mib: *host_max }
            }
            Outcome::Refused { message, .. } => {
                if refused(resource) {
                    // No digest: the revert changed it.
                    plan.state.record_refusal(
                        resource,
                        direction,
                        now,
                        plan.policy.backoff,
                        signature_after.clone(),
                        message.clone(),
                    );
                    WriteOutcome::Refused(message.clone())
                } else {
                    plan.state.record_change(resource, direction, from, to, now);
                    WriteOutcome::Applied
                }
            }
            Outcome::Skipped(why) => WriteOutcome::Skipped(why.clone()),
            Outcome::Unsettled(why) => {
                plan.state.record_error(resource, now, why.clone());
                WriteOutcome::Unsettled(why.clone())
            }
            Outcome::Failed(why) => {
                plan.state.record_error(resource, now, why.clone());
                WriteOutcome::Failed(why.clone())
            }
        };
        plan.outcome.push((resource, written));
    }
}
