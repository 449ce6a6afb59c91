//! The sign of a guest that left added vCPUs offline, read from its samples alone (for VMs
//! without a guest agent to ask): after a grow from n to m vCPUs of a VM that was saturated,
//! a guest that uses only its n old vCPUs reads pinned at n/m of the new size, as flat as it
//! read 100 % before. That is not a drop in load to scale down from: the grow is taken back
//! and blocked, with the fix to make inside the guest.

use super::{Action, Ctx, ResourceDecision, SATURATED, fmt_duration, round_pct};
use crate::state::model::{Backoff, OnlineWatch, ResourceState};

/// How long every sample must read pinned before the guest is judged (at least; `up_after`
/// if longer): a real load that happens to equal the old size does not stay that flat.
pub const PINNED_FOR_SECS: u64 = 5 * 60;

/// Samples needed, whatever their step.
const PINNED_SAMPLES: u32 = 5;

/// How long a resource the guest left offline is blocked (unless its config changes).
pub const OFFLINE_BLOCK_SECS: u64 = 24 * 3600;

/// A watch for a grow just applied, when the VM was saturated (pinned at its size) before.
pub fn watch_for(from: u64, to: u64, busy_before: Option<f64>) -> Option<OnlineWatch> {
    (to > from && busy_before.is_some_and(|b| b >= SATURATED)).then_some(OnlineWatch {
        from,
        to,
        seen: None,
        pinned_since: None,
        pinned_samples: 0,
    })
}

/// Reads the new samples into the watch; takes the grow back when they read pinned long
/// enough. `None`: nothing to say (the decision goes on as usual).
pub(super) fn judge(ctx: &Ctx<'_>, rs: &mut ResourceState) -> Option<ResourceDecision> {
    let watch = rs.online_watch.as_mut()?;
    let current = u64::from(ctx.facts.vcpus);
    if current != watch.to || ctx.facts.windows == Some(true) {
        // Changed since (by someone, or by us), or a guest that cannot give them back.
        rs.online_watch = None;
        return None;
    }
    let pinned_at = watch.from as f64 / watch.to as f64;
    let tolerance = (0.1 * pinned_at).max(0.04);
    let step = ctx.view().step_secs.max(1);
    for point in &ctx.view().points {
        if watch.seen.is_some_and(|seen| point.t <= seen) {
            continue;
        }
        watch.seen = Some(point.t);
        if (point.sample - pinned_at).abs() > tolerance {
            // It uses more than its old vCPUs (they came online), or less (the load fell
            // and nothing can be told): either way, nothing to watch any more.
            rs.online_watch = None;
            return None;
        }
        watch
            .pinned_since
            .get_or_insert(point.t.saturating_sub(step));
        watch.pinned_samples += 1;
    }
    let since = watch.pinned_since?;
    let held = ctx.now.saturating_sub(since);
    let needs = ctx.rp.up_after.as_secs().max(PINNED_FOR_SECS);
    if held < needs || watch.pinned_samples < PINNED_SAMPLES {
        return None;
    }
    let (from, to) = (watch.from, watch.to);
    rs.online_watch = None;
    let message = format!(
        "cpu pinned at {}% (= {from} of {to} vCPUs) for {} since the grow from {from} to {to}, \
         as flat as 100% before: the guest did not bring the added vCPUs online; {}",
        round_pct(pinned_at * 100.0),
        fmt_duration(held),
        crate::onlining::fix_inside_the_guest(ctx.res)
    );
    rs.backoff_up = Some(Backoff {
        since: ctx.now,
        until: ctx.now.saturating_add(OFFLINE_BLOCK_SECS),
        // The config after the take-back; no digest (the write changes it).
        signature: crate::state::ConfigSignature {
            vcpus: u32::try_from(from).unwrap_or(u32::MAX),
            memory_mib: ctx.facts.memory_mib,
            digest: None,
        },
        message: message.clone(),
    });
    rs.reset_breach();
    Some(ctx.make(
        Action::Down { from: to, to: from },
        format!("{message}: taking them back, {to} → {from} vCPUs"),
    ))
}
