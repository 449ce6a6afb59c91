//! The write protocol: one asynchronous config write with `digest`, wait for its task,
//! re-read `pending`, and revert anything of ours that did not go live, so that nothing is
//! left waiting for the VM's next reboot.

use std::time::Duration;

use crate::guest::GuestKind;
use crate::pve::error::{host_max_memory_mib, is_digest_conflict};
use crate::pve::types::{ConfigDigest, PendingItem, VmConfig, parse_memory_property};
use crate::pve::{ApiError, ApiErrorKind, Client, TaskOutcome};
pub use crate::state::{ConfigWrite, MANAGED_KEYS};

/// Why a write was not made: the config changed between our read and our write.
const CHANGED_MEANWHILE: &str =
    "changed meanwhile (the config was edited since it was read): retried next run";

/// What happened to a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Live now.
    Applied,
    /// The VM did not take (all of) it live; what was left pending was reverted.
    /// `keys` are the refused keys.
    Refused {
        keys: Vec<String>,
        message: String,
        /// What the VM runs with now (a refusal can leave part of the change done).
        vcpus_now: Option<u64>,
        memory_mib_now: Option<u64>,
        /// The host's memory maximum for this VM, when the refusal named it (qemu-server
        /// `get_max_mem`): a ceiling to respect, not a refusal to retry.
        host_max_memory_mib: Option<u64>,
        /// Proxmox applied it, but the guest left what was added offline (and it was taken
        /// back): blocked for longer than a refusal, until the guest is fixed.
        guest_offline: bool,
    },
    /// Not attempted or not applied for a reason that may pass (digest changed, VM locked,
    /// someone else's pending change): try again on a later run.
    Skipped(String),
    /// The task was still running when we stopped waiting; a later run settles it.
    Unsettled(String),
    /// An error (permission, API, network).
    Failed(String),
}

/// Timing of the write protocol.
#[derive(Debug, Clone, Copy)]
pub struct ApplyTiming {
    /// Longest wait for the config task.
    pub task_timeout: Duration,
    /// First poll interval (doubles up to 2 s).
    pub poll: Duration,
    /// How long a guest gets to bring added vCPUs or memory online before the guest agent's
    /// answer counts (udev acts within a second of the ACPI event; the config task ends when
    /// QEMU has the device, not when the guest has taken it).
    pub guest_online_wait: Duration,
}

impl Default for ApplyTiming {
    fn default() -> Self {
        ApplyTiming {
            task_timeout: Duration::from_secs(60),
            poll: Duration::from_millis(200),
            guest_online_wait: Duration::from_secs(3),
        }
    }
}

/// Pending changes to our keys that are already there before we write.
pub fn foreign_pending(pending: &[PendingItem]) -> Vec<String> {
    pending
        .iter()
        .filter(|item| item.is_pending() && MANAGED_KEYS.contains(&item.key.as_str()))
        .map(|item| {
            format!(
                "{}: {} → {}",
                item.key,
                item.value.as_deref().unwrap_or("(unset)"),
                item.pending.as_deref().unwrap_or("(delete)")
            )
        })
        .collect()
}

/// Writes `change` to a VM whose current config (with its digest) was just read.
pub fn apply(
    client: &Client,
    node: &str,
    vmid: u32,
    config: &VmConfig,
    change: &ConfigWrite,
    timing: ApplyTiming,
) -> Outcome {
    if change.is_empty() {
        return Outcome::Applied;
    }
    let params = change.params();
    let keys = change.keys();
    let undo = Undo {
        change,
        balloon_before: config.balloon,
        kind: GuestKind::Vm,
    };
    let write = client.vm_config_post(node, vmid, &params, &config.digest);
    let task = match write {
        Ok(upid) => client.wait_task(node, &upid, timing.task_timeout, timing.poll),
        Err(e) => return write_failed(client, node, vmid, &undo, &keys, &e),
    };
    match task {
        Ok(TaskOutcome::Ok(_)) => settle(client, node, vmid, &undo, &keys, "", false),
        // The worker checks the digest again under the config lock, before writing anything.
        Ok(TaskOutcome::Failed(exit)) if is_digest_conflict(&exit) => {
            Outcome::Skipped(CHANGED_MEANWHILE.into())
        }
        Ok(TaskOutcome::Failed(exit)) => settle(client, node, vmid, &undo, &keys, &exit, false),
        Ok(TaskOutcome::StillRunning) => Outcome::Unsettled(format!(
            "the config task did not finish within {}s; the next run checks the outcome",
            timing.task_timeout.as_secs()
        )),
        // The task's status could not be read: it may still be running.
        Err(e) => settle(client, node, vmid, &undo, &keys, &e.to_string(), true),
    }
}

/// Writes `change` to a container whose current config (with its digest) was just read.
/// pve-container's config PUT is synchronous (API2/LXC/Config.pm `update_vm` returns null):
/// it applies `memory` to the running container's cgroup and takes `cores` into the config
/// (pvestatd enacts it within ~10 s) before it answers. A hotplug error is a 400 with per-key
/// errors and nothing written; either way `pending` tells what is live.
pub fn apply_container(
    client: &Client,
    node: &str,
    vmid: u32,
    config: &VmConfig,
    change: &ConfigWrite,
) -> Outcome {
    if change.is_empty() {
        return Outcome::Applied;
    }
    let kind = GuestKind::Ct;
    let params = change.params_for(kind);
    let keys = change.keys_for(kind);
    let undo = Undo {
        change,
        balloon_before: None,
        kind,
    };
    match client.guest_config_put(kind, node, vmid, &params, &config.digest) {
        Ok(()) => settle(client, node, vmid, &undo, &keys, "", false),
        Err(e) => write_failed(client, node, vmid, &undo, &keys, &e),
    }
}

/// What an error answer to the config call means, the same for a VM and a container.
fn write_failed(
    client: &Client,
    node: &str,
    vmid: u32,
    undo: &Undo<'_>,
    keys: &[&str],
    e: &ApiError,
) -> Outcome {
    let (guest, label) = match undo.kind {
        GuestKind::Vm => ("VM", "VM"),
        GuestKind::Ct => ("container", "CT"),
    };
    if e.is_digest_mismatch() {
        Outcome::Skipped(CHANGED_MEANWHILE.into())
    } else if e.is_locked() {
        Outcome::Skipped(e.message.clone())
    } else if e.is_missing_vm() {
        Outcome::Skipped(format!(
            "the {guest} was migrated or deleted since it was read: next run"
        ))
    } else if e.outcome_unknown || e.kind == ApiErrorKind::BadRequest {
        // The change may be (partly) written: learn the truth before anything else.
        log::warn!("{label} {vmid}: {e}; re-reading to learn the outcome");
        settle(
            client,
            node,
            vmid,
            undo,
            keys,
            &e.to_string(),
            e.outcome_unknown,
        )
    } else {
        Outcome::Failed(describe_write_error(e))
    }
}

/// After a write: whatever of ours is still pending did not go live. Undo it.
/// `outcome_unknown`: the write may still be in progress on the server (59x, timeout), so
/// "not there yet" is not "not applied". The I/O shell around [`judge_pending`] and
/// [`judge_config`].
fn settle(
    client: &Client,
    node: &str,
    vmid: u32,
    undo: &Undo<'_>,
    keys: &[&str],
    task_message: &str,
    outcome_unknown: bool,
) -> Outcome {
    let pending = match client.guest_pending(undo.kind, node, vmid) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::Unsettled(format!(
                "could not re-read pending changes ({e}); the next run checks the outcome"
            ));
        }
    };
    match judge_pending(keys, &pending, task_message) {
        Settle::Done(outcome) => outcome,
        Settle::AskConfig => match client.guest_config_current(undo.kind, node, vmid) {
            Ok(now) => judge_config(&now, undo.change, task_message, outcome_unknown),
            Err(e) => Outcome::Unsettled(format!(
                "{task_message}; could not re-read the config ({e}); the next run checks"
            )),
        },
        Settle::Refused(mut refused) => {
            let addition = match undo.run(client, node, vmid, &pending) {
                Ok(done) => done.describe(),
                Err(e) => format!("; REVERT FAILED, pending change remains: {e}"),
            };
            if let Outcome::Refused { message, .. } = &mut refused {
                message.push_str(&addition);
            }
            refused
        }
    }
}

/// The next step of settling a write, judged from `pending` alone.
#[derive(Debug, PartialEq)]
enum Settle {
    /// Settled.
    Done(Outcome),
    /// The task failed but nothing is pending: either nothing was written or all of it was;
    /// the running config tells which.
    AskConfig,
    /// Keys of ours stayed pending: undo them, then report this refusal.
    Refused(Outcome),
}

/// What `pending` after a write says about it. Pure.
fn judge_pending(keys: &[&str], pending: &[PendingItem], task_message: &str) -> Settle {
    let stuck: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|key| pending.iter().any(|p| p.key == *key && p.is_pending()))
        .collect();
    if stuck.is_empty() {
        return if task_message.is_empty() {
            Settle::Done(Outcome::Applied)
        } else {
            Settle::AskConfig
        };
    }
    // `value` of a pending row is what runs now: part of a refused unplug may have gone.
    let running = |key: &str| {
        pending
            .iter()
            .find(|p| p.key == key)
            .and_then(|p| p.value.as_deref())
            .and_then(parse_memory_property)
    };
    let message = if task_message.is_empty() {
        format!("{} left pending (not applied live)", stuck.join(", "))
    } else {
        task_message.trim().to_string()
    };
    Settle::Refused(Outcome::Refused {
        keys: stuck.iter().map(|k| k.to_string()).collect(),
        host_max_memory_mib: host_max_memory_mib(task_message),
        message,
        vcpus_now: running("vcpus"),
        memory_mib_now: running("memory"),
        guest_offline: false,
    })
}

/// What the running config says about a failed write with nothing pending. Pure.
fn judge_config(
    now: &VmConfig,
    change: &ConfigWrite,
    task_message: &str,
    outcome_unknown: bool,
) -> Outcome {
    if reached(now, change) {
        Outcome::Applied
    } else if outcome_unknown {
        Outcome::Unsettled(format!(
            "{task_message}; not applied yet, it may still be in progress: the next run checks"
        ))
    } else {
        Outcome::Failed(format!("the change was not applied: {task_message}"))
    }
}

/// What undoing a write that did not (all) go live takes: the change that was written, and
/// the balloon floor the VM had before it.
pub struct Undo<'a> {
    pub change: &'a ConfigWrite,
    pub balloon_before: Option<u64>,
    /// The guest's kind: where to write, and its CPU key.
    pub kind: GuestKind,
}

/// What [`Undo::run`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Undone {
    /// Our pending values, dropped with `revert`.
    pub reverted: Vec<&'static str>,
    /// Keys pending with a value that is not ours (an admin's, for the next reboot): left.
    pub foreign: Vec<&'static str>,
    /// The balloon floor written back, when it had been lowered for a memory change that
    /// did not go live.
    pub balloon_restored: Option<u64>,
}

impl Undone {
    /// A clause to append to the outcome's message.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        if !self.reverted.is_empty() {
            text.push_str("; reverted the pending change");
        }
        if let Some(balloon) = self.balloon_restored {
            text.push_str(&format!("; balloon floor put back to {balloon} MiB"));
        }
        if !self.foreign.is_empty() {
            text.push_str(&format!(
                "; {} pending with a value that is not pvescale's: left as it is",
                self.foreign.join(", ")
            ));
        }
        text
    }
}

impl Undo<'_> {
    /// Reverts the pending values that are the ones this change wrote (never someone else's
    /// value of the same key, e.g. one an admin set for the next reboot), and writes back a
    /// balloon floor lowered together with a memory change that did not go live (qemu-server
    /// applies the balloon at once, whatever happens to the unplug). One synchronous write,
    /// with the digest that came with `pending`, so a concurrent edit is not overwritten.
    pub fn run(
        &self,
        client: &Client,
        node: &str,
        vmid: u32,
        pending: &[PendingItem],
    ) -> Result<Undone, ApiError> {
        let done = self.plan(pending);
        if done.reverted.is_empty() && done.balloon_restored.is_none() {
            return Ok(done);
        }
        // `pending` carries the digest as a row of its own; else read it.
        let from_pending = pending
            .iter()
            .filter(|p| p.key == "digest")
            .find_map(|p| p.value.as_deref().and_then(ConfigDigest::from_server));
        let digest = match from_pending {
            Some(digest) => digest,
            None => client.guest_config_current(self.kind, node, vmid)?.digest,
        };
        let mut params = Vec::new();
        if !done.reverted.is_empty() {
            params.push(("revert", done.reverted.join(",")));
        }
        if let Some(balloon) = done.balloon_restored {
            params.push(("balloon", balloon.to_string()));
        }
        client.guest_config_put(self.kind, node, vmid, &params, &digest)?;
        Ok(done)
    }

    /// What undoing takes, judged from `pending`. Pure.
    pub fn plan(&self, pending: &[PendingItem]) -> Undone {
        let mut done = Undone::default();
        let pending_value = |key: &str| {
            pending
                .iter()
                .find(|p| p.key == key && p.is_pending())
                .map(|p| p.pending.as_deref().and_then(parse_memory_property))
        };
        for key in self.change.keys_for(self.kind) {
            match pending_value(key) {
                Some(value) if value == self.change.value_of(key) => done.reverted.push(key),
                Some(_) => done.foreign.push(key),
                None => {}
            }
        }
        let memory_not_live = pending_value("memory").is_some();
        let balloon_applied =
            self.change.balloon_mib.is_some() && pending_value("balloon").is_none();
        if memory_not_live
            && balloon_applied
            && let Some(before) = self.balloon_before.filter(|b| *b > 0)
            && self.change.balloon_mib != Some(before)
        {
            // Never above what runs now (part of a refused unplug may be gone).
            let running = pending
                .iter()
                .find(|p| p.key == "memory")
                .and_then(|p| p.value.as_deref())
                .and_then(parse_memory_property);
            done.balloon_restored = Some(running.map_or(before, |m| before.min(m)));
        }
        done
    }
}

fn reached(config: &VmConfig, change: &ConfigWrite) -> bool {
    change.vcpus.is_none_or(|v| config.vcpus() == v)
        && change.memory_mib.is_none_or(|m| config.memory == Some(m))
}

fn describe_write_error(error: &ApiError) -> String {
    match error.kind {
        ApiErrorKind::Permission => format!(
            "{error} — the token lacks a privilege for this VM; grant it with pveum acl modify"
        ),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: &str, pending: Option<&str>) -> PendingItem {
        PendingItem {
            key: key.into(),
            value: Some(value.into()),
            pending: pending.map(Into::into),
            delete: None,
        }
    }

    fn shrink() -> ConfigWrite {
        ConfigWrite {
            vcpus: None,
            memory_mib: Some(4096),
            balloon_mib: Some(4096),
        }
    }

    #[test]
    fn nothing_pending_after_a_good_task_is_applied() {
        let pending = [row("memory", "4096", None), row("digest", "abc", None)];
        assert_eq!(
            judge_pending(&["memory"], &pending, ""),
            Settle::Done(Outcome::Applied)
        );
        assert_eq!(
            judge_pending(&["memory"], &pending, "some error"),
            Settle::AskConfig
        );
    }

    #[test]
    fn a_stuck_key_is_a_refusal_with_what_runs_now() {
        let pending = [row("memory", "7680", Some("4096")), row("vcpus", "2", None)];
        let exit = "400 Parameter verification failed. memory: hotplug problem - error unplug memory module";
        let Settle::Refused(Outcome::Refused {
            keys,
            memory_mib_now,
            vcpus_now,
            host_max_memory_mib,
            ..
        }) = judge_pending(&["memory", "balloon"], &pending, exit)
        else {
            panic!("a refusal");
        };
        assert_eq!(keys, vec!["memory"]);
        assert_eq!((memory_mib_now, vcpus_now), (Some(7680), Some(2)));
        assert_eq!(host_max_memory_mib, None);
    }

    #[test]
    fn a_failed_task_is_judged_by_the_running_config() {
        let write = ConfigWrite {
            vcpus: Some(4),
            ..ConfigWrite::default()
        };
        let config = |vcpus: u64| -> VmConfig {
            serde_json::from_value(serde_json::json!({"digest": "d", "vcpus": vcpus})).unwrap()
        };
        assert_eq!(
            judge_config(&config(4), &write, "x", false),
            Outcome::Applied
        );
        assert!(matches!(
            judge_config(&config(2), &write, "x", false),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            judge_config(&config(2), &write, "x", true),
            Outcome::Unsettled(_)
        ));
    }

    #[test]
    fn undo_reverts_only_our_value_and_puts_the_balloon_back_within_what_runs() {
        let write = shrink();
        let undo = Undo {
            kind: GuestKind::Vm,
            change: &write,
            balloon_before: Some(8192),
        };
        // The guest let one DIMM go (8192 → 7680) and refused the rest; the balloon went live.
        let pending = [
            row("memory", "7680", Some("4096")),
            row("balloon", "4096", None),
        ];
        let done = undo.plan(&pending);
        assert_eq!(done.reverted, vec!["memory"]);
        assert_eq!(done.balloon_restored, Some(7680), "never above what runs");
        assert!(done.foreign.is_empty());
        // Someone else's value of the same key is left alone, and then memory is not ours.
        let pending = [
            row("memory", "8192", Some("16384")),
            row("balloon", "4096", None),
        ];
        let done = undo.plan(&pending);
        assert_eq!(done.reverted, Vec::<&str>::new());
        assert_eq!(done.foreign, vec!["memory"]);
        // Without a balloon floor before (0 = no device), nothing to put back.
        let undo = Undo {
            kind: GuestKind::Vm,
            change: &write,
            balloon_before: None,
        };
        let pending = [row("memory", "8192", Some("4096"))];
        assert_eq!(undo.plan(&pending).balloon_restored, None);
    }

    #[test]
    fn foreign_pending_lists_only_our_keys() {
        let pending = vec![
            PendingItem {
                key: "memory".into(),
                value: Some("2048".into()),
                pending: Some("4096".into()),
                delete: None,
            },
            PendingItem {
                key: "cores".into(),
                value: Some("2".into()),
                pending: Some("4".into()),
                delete: None,
            },
            PendingItem {
                key: "vcpus".into(),
                value: Some("2".into()),
                pending: None,
                delete: None,
            },
        ];
        assert_eq!(foreign_pending(&pending), vec!["memory: 2048 → 4096"]);
    }
}
