//! Delivery per channel in one run, for the metrics file and the JSON report: messages sent,
//! failed (after the retry) and held back by the hourly cap, and when a message last reached
//! the channel. That last time lives in the state, so quiet runs still report it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Channel, ChannelResult, EventKind};

/// How one configured channel fared in the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelDelivery {
    /// `email`, `gotify` or `webhook:<name>`: stable, and never a URL, token or password.
    pub channel: String,
    /// Messages it took (0 or 1: a run sends at most one message per channel).
    pub sent: u32,
    /// Messages it did not take, after the retry.
    pub failed: u32,
    /// Messages the hourly cap held back from it.
    pub held: u32,
    /// Unix time at which a message last reached it (any run); none yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
}

/// The delivery of every configured channel, given what was sent (`results`, matched by
/// channel id) and the kinds of the events the cap held back. Records each success at `now`
/// in `last_success` (the state's), and forgets channels no longer configured.
pub fn tally(
    channels: &[Channel<'_>],
    results: &[ChannelResult],
    capped_kinds: &BTreeSet<EventKind>,
    last_success: &mut BTreeMap<String, u64>,
    now: u64,
) -> Vec<ChannelDelivery> {
    let ids: BTreeSet<String> = channels.iter().map(Channel::id).collect();
    last_success.retain(|id, _| ids.contains(id));
    channels
        .iter()
        .map(|channel| {
            let id = channel.id();
            let result = results.iter().find(|r| r.id == id);
            let sent = result.is_some_and(|r| r.attempts > 0 && r.error.is_none());
            let failed = result.is_some_and(|r| r.error.is_some());
            if sent {
                last_success.insert(id.clone(), now);
            }
            let held = !capped_kinds.is_disjoint(channel.events());
            ChannelDelivery {
                last_success: last_success.get(&id).copied(),
                channel: id,
                sent: u32::from(sent),
                failed: u32::from(failed),
                held: u32::from(held),
            }
        })
        .collect()
}
