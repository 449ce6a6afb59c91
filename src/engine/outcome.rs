//! Settling writes: what an interrupted earlier write left, and what this run's writes did.

use super::*;
use crate::record::WriteOutcome;
use crate::state::{InFlight, key_of};

/// An earlier run started a write and did not see it end (killed, or the task outlived
/// its wait). What went live is recorded as a change; what was left pending is reverted,
/// so that nothing of ours waits for the VM's next reboot. The I/O shell around
/// [`stuck_keys`], [`undo_note`] and [`record_settlement`].
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
    let stuck = stuck_keys(&in_flight, &read.pending);
    if !stuck.is_empty() {
        if mode.writes() {
            let undo = apply::Undo {
                change: &in_flight.write,
                balloon_before: in_flight.balloon_mib_before,
                kind: plan.resource.kind,
            };
            match undo.run(client, &plan.resource.node, vmid, &read.pending) {
                Ok(done) => {
                    plan.notes.push(undo_note(&stuck, &done));
                    read.pending
                        .retain(|p| !done.reverted.contains(&p.key.as_str()));
                    // The undo changed the digest: a write in this run needs the new one.
                    match client.guest_config_current(plan.resource.kind, &plan.resource.node, vmid)
                    {
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
    let notes = record_settlement(
        prev,
        &in_flight,
        &stuck,
        &read.config,
        plan.policy.backoff,
        now,
    );
    plan.notes.extend(notes);
    if mode.writes() {
        prev.in_flight = None;
    }
}

/// The keys of an earlier write that are still pending. Pure.
fn stuck_keys(in_flight: &InFlight, pending: &[PendingItem]) -> Vec<&'static str> {
    in_flight
        .write
        .keys()
        .into_iter()
        .filter(|key| pending.iter().any(|p| p.key == *key && p.is_pending()))
        .collect()
}

/// What the run says about undoing an interrupted write. Pure.
fn undo_note(stuck: &[&str], done: &apply::Undone) -> String {
    let mut note = if done.reverted.is_empty() {
        format!(
            "{} left pending by an interrupted earlier write",
            stuck.join(", ")
        )
    } else {
        format!(
            "reverted {} left pending by an interrupted earlier write",
            done.reverted.join(", ")
        )
    };
    if let Some(balloon) = done.balloon_restored {
        note.push_str(&format!("; balloon floor put back to {balloon} MiB"));
    }
    if !done.foreign.is_empty() {
        note.push_str(&format!(
            "; {} pending with a value that is not pvescale's: left as it is",
            done.foreign.join(", ")
        ));
    }
    note
}

/// Records in `prev` what an interrupted write did, judged from the VM's running `config`:
/// a size that moved went live (a change at the time of the write); a key that stayed
/// pending was not taken live (a refusal: back off). Returns the notes to show. Pure.
fn record_settlement(
    prev: &mut VmState,
    in_flight: &InFlight,
    stuck: &[&str],
    config: &VmConfig,
    backoff: std::time::Duration,
    now: u64,
) -> Vec<String> {
    let mut notes = Vec::new();
    let sizes = [
        (
            Resource::Cpu,
            in_flight.write.vcpus,
            in_flight.vcpus_before,
            config.vcpus(),
        ),
        (
            Resource::Memory,
            in_flight.write.memory_mib,
            in_flight.memory_mib_before,
            config.memory.unwrap_or(in_flight.memory_mib_before),
        ),
    ];
    let direction = |from: u64, to: u64| {
        if to > from {
            Direction::Up
        } else {
            Direction::Down
        }
    };
    for (resource, target, before, now_value) in sizes {
        let Some(target) = target else { continue };
        if now_value != before {
            prev.record_change(
                resource,
                direction(before, now_value),
                before,
                now_value,
                in_flight.at,
            );
            notes.push(format!(
                "an interrupted earlier write did go live: {resource} {before} → {now_value}"
            ));
        }
        let key = key_of(resource);
        if stuck.contains(&key) && target != before {
            let signature = ConfigSignature {
                vcpus: u32::try_from(config.vcpus()).unwrap_or(u32::MAX),
                memory_mib: config.memory.unwrap_or(before),
                digest: None,
            };
            prev.record_refusal(
                resource,
                direction(before, target),
                now,
                backoff,
                signature,
                format!("{key} stayed pending after an interrupted write (not applied live)"),
            );
        }
    }
    notes
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
            Outcome::Refused {
                message,
                guest_offline,
                ..
            } => {
                if refused(resource) {
                    // A guest that leaves added vCPUs or memory offline does so until it is
                    // fixed inside: blocked for a day rather than retried each back-off.
                    let backoff = if *guest_offline {
                        let block = policy::onlining::OFFLINE_BLOCK_SECS;
                        plan.policy
                            .backoff
                            .max(std::time::Duration::from_secs(block))
                    } else {
                        plan.policy.backoff
                    };
                    // No digest: the revert changed it.
                    plan.state.record_refusal(
                        resource,
                        direction,
                        now,
                        backoff,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ConfigWrite;

    fn in_flight(vcpus: Option<u64>, memory_mib: Option<u64>) -> InFlight {
        InFlight {
            at: 1_000,
            write: ConfigWrite {
                vcpus,
                memory_mib,
                balloon_mib: None,
            },
            vcpus_before: 2,
            memory_mib_before: 8192,
            balloon_mib_before: None,
        }
    }

    fn config(vcpus: u64, memory: u64) -> VmConfig {
        serde_json::from_value(serde_json::json!({
            "digest": "d", "sockets": 1, "cores": 8, "vcpus": vcpus, "memory": memory
        }))
        .expect("config")
    }

    fn pending(key: &str, value: &str, wanted: &str) -> PendingItem {
        PendingItem {
            key: key.into(),
            value: Some(value.into()),
            pending: Some(wanted.into()),
            delete: None,
        }
    }

    #[test]
    fn a_write_that_went_live_is_recorded_as_a_change_at_its_time() {
        let mut prev = VmState::default();
        let write = in_flight(Some(4), None);
        let notes = record_settlement(&mut prev, &write, &[], &config(4, 8192), HOUR, 5_000);
        let change = prev.cpu.last_change.as_ref().expect("a change");
        assert_eq!((change.from, change.to, change.at), (2, 4, 1_000));
        assert!(prev.cpu.backoff_up.is_none());
        assert_eq!(
            notes,
            ["an interrupted earlier write did go live: cpu 2 → 4"]
        );
    }

    #[test]
    fn a_key_left_pending_is_a_refusal_and_part_of_an_unplug_counts() {
        let mut prev = VmState::default();
        let write = in_flight(None, Some(4096));
        let left = [pending("memory", "7680", "4096")];
        let stuck = stuck_keys(&write, &left);
        assert_eq!(stuck, ["memory"]);
        // One DIMM went before the guest refused the rest.
        let notes = record_settlement(&mut prev, &write, &stuck, &config(2, 7680), HOUR, 5_000);
        assert_eq!(notes.len(), 1, "{notes:?}");
        let change = prev
            .memory
            .last_change
            .as_ref()
            .expect("the part that went");
        assert_eq!((change.from, change.to), (8192, 7680));
        let backoff = prev.memory.backoff_down.as_ref().expect("backed off");
        assert_eq!(backoff.until, 5_000 + 3600);
        assert!(prev.memory.backoff_up.is_none());
    }

    #[test]
    fn nothing_moved_and_nothing_pending_records_nothing() {
        let mut prev = VmState::default();
        let write = in_flight(Some(4), Some(4096));
        assert!(stuck_keys(&write, &[]).is_empty());
        let notes = record_settlement(&mut prev, &write, &[], &config(2, 8192), HOUR, 5_000);
        assert!(notes.is_empty());
        assert_eq!(prev, VmState::default());
    }

    #[test]
    fn the_undo_note_says_what_was_done() {
        let done = apply::Undone {
            reverted: vec!["memory"],
            foreign: vec![],
            balloon_restored: Some(8192),
        };
        assert_eq!(
            undo_note(&["memory"], &done),
            "reverted memory left pending by an interrupted earlier write; balloon floor put \
             back to 8192 MiB"
        );
        let left = apply::Undone {
            reverted: vec![],
            foreign: vec!["memory"],
            balloon_restored: None,
        };
        assert!(undo_note(&["memory"], &left).contains("not pvescale's: left as it is"));
    }

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
}
