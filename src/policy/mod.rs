//! The scaling decision: a pure function of policy, VM facts, utilisation, state and time.
//!
//! The parameter types below are shared with `config.rs` (which fills them from TOML);
//! their field names and meanings are a contract.

mod container;
mod format;
pub mod onlining;
pub mod readiness;
mod sizing;
mod types;
mod window;

use std::time::Duration;

use crate::state::model::{ResourceState, VmState};

pub use format::fmt_duration;
use format::*;
use sizing::*;
pub use types::*;

// ---------------------------------------------------------------------------------------------
// The decision.
//
// `decide` is called once per VM and run with what `/cluster/resources` and the metrics tell
// (the envelope fields of `VmFacts` are then `None`: unknown, so neither blocking nor bounding),
// and once more, for the VMs about to change, with the facts read from the VM's config; the
// second decision is the one applied. Both calls with the same previous state and `now` give
// the same new state.
// ---------------------------------------------------------------------------------------------

/// Utilisation figures above this are out of range (unknown). Between 1 and this they count as
/// 1 (100 %): accounting jitter makes CPU slightly exceed 1, and a host-side memory estimate
/// includes QEMU's own overhead.
pub const MAX_PLAUSIBLE_UTILISATION: f64 = 1.5;

/// A breach (above `high` / below `low`) survives a gap between two known figures of at most
/// the policy window, and at least this long (a run every minute, with some jitter). After a
/// longer gap nobody watched, so the breach starts again.
pub const MIN_BREACH_GAP_SECS: u64 = 120;

/// Between two samples, a gap longer than three of the source's steps, and at least this,
/// ends a breach: samples nobody saw.
pub const MIN_SAMPLE_GAP_SECS: u64 = 60;

/// Decide what to do with one VM, and the VM's new state.
///
/// Pure: the same inputs give the same outputs. `prev` is `None` for a VM never seen before.
/// The new state always has `last_seen = now`; for skipped VMs (and disabled resources) the
/// rest of the state is kept as it was. The apply step then calls
/// [`VmState::record_change`] or [`VmState::record_refusal`] on the new state.
pub fn decide(
    policy: &Policy,
    facts: &VmFacts,
    util: &Utilisation,
    node: &NodeHeadroom,
    prev: Option<&VmState>,
    now: u64,
) -> (Decision, VmState) {
    let mut state = prev.cloned().unwrap_or_default();
    state.last_seen = now;
    if let Some(why) = skip_reason(facts) {
        let reason = format!("{why}: skipped");
        let decision = Decision {
            cpu: ResourceDecision::new(Resource::Cpu, Action::Skip, reason.clone()),
            memory: ResourceDecision::new(Resource::Memory, Action::Skip, reason),
        };
        return (decision, state);
    }
    let mut decide_one = |res: Resource| {
        let ctx = Ctx {
            policy,
            rp: policy.resource(res),
            res,
            facts,
            util,
            node,
            now,
        };
        decide_resource(&ctx, state.resource_mut(res))
    };
    let cpu = decide_one(Resource::Cpu);
    let memory = decide_one(Resource::Memory);
    (Decision { cpu, memory }, state)
}

/// Why a VM gets no decision at all.
fn skip_reason(facts: &VmFacts) -> Option<String> {
    if facts.template {
        return Some("VM is a template".into());
    }
    match facts.status {
        VmStatus::Running => {}
        VmStatus::Stopped => return Some("VM is stopped".into()),
        VmStatus::Paused => return Some("VM is paused".into()),
        VmStatus::Unknown => return Some("VM status is unknown".into()),
    }
    if let Some(lock) = &facts.lock {
        return Some(format!("VM is locked ({lock})"));
    }
    match &facts.pending {
        Some(keys) if !keys.is_empty() => Some(format!(
            "VM config has pending changes ({}) that are not pvescale's; apply or revert them",
            keys.join(", ")
        )),
        _ => None,
    }
}

/// Everything one resource's decision looks at.
pub(super) struct Ctx<'a> {
    policy: &'a Policy,
    rp: &'a ResourcePolicy,
    res: Resource,
    facts: &'a VmFacts,
    util: &'a Utilisation,
    node: &'a NodeHeadroom,
    now: u64,
}

impl Ctx<'_> {
    fn name(&self) -> &'static str {
        self.res.name()
    }

    /// Current size (vCPUs or MiB).
    fn current(&self) -> u64 {
        match self.res {
            Resource::Cpu => u64::from(self.facts.vcpus),
            Resource::Memory => self.facts.memory_mib,
        }
    }

    /// The samples of this resource, if the caller has them.
    fn view(&self) -> &SampleView {
        match self.res {
            Resource::Cpu => &self.util.cpu_view,
            Resource::Memory => &self.util.memory_view,
        }
    }

    /// The utilisation fraction (clamped to 1), or why it is unknown.
    fn reading(&self) -> Result<f64, String> {
        let (figure, samples) = match self.res {
            Resource::Cpu => (self.util.cpu, self.util.cpu_samples),
            Resource::Memory => (self.util.memory, self.util.memory_samples),
        };
        let Some(v) = figure else {
            return Err("no data".into());
        };
        if samples < self.policy.min_samples {
            return Err(format!(
                "no data ({samples} sample{}, need {})",
                if samples == 1 { "" } else { "s" },
                self.policy.min_samples
            ));
        }
        if !v.is_finite() || !(0.0..=MAX_PLAUSIBLE_UTILISATION).contains(&v) {
            return Err(format!("figure out of range ({v})"));
        }
        Ok(v.min(1.0))
    }

    /// How much more than its utilisation a guest wants: `1 / (1 − p)` for a container whose
    /// own cgroup stalls `p` of the time on this resource (see `container`), else 1.
    fn demand_factor(&self) -> f64 {
        container::demand_from_pressure(self, 1.0).unwrap_or(1.0)
    }

    /// The utilisation to size toward, as a fraction.
    fn target(&self) -> f64 {
        let pct = self.rp.target.unwrap_or((self.rp.low + self.rp.high) / 2.0);
        (pct / 100.0).clamp(0.01, 1.0)
    }

    fn make(&self, action: Action, reason: String) -> ResourceDecision {
        ResourceDecision::new(self.res, action, reason)
    }
}

/// The decision on the load, then what the schedule windows in force make of it.
fn decide_resource(ctx: &Ctx<'_>, rs: &mut ResourceState) -> ResourceDecision {
    let decision = decide_on_load(ctx, rs);
    window::apply(ctx, rs, decision)
}

fn decide_on_load(ctx: &Ctx<'_>, rs: &mut ResourceState) -> ResourceDecision {
    let name = ctx.name();
    if !ctx.rp.enabled {
        return ctx.make(
            Action::Skip,
            format!("{name}: not managed (enabled = false): skipped"),
        );
    }

    // A back-off ends at its time, or as soon as the config is no longer the one refused.
    let signature = ctx.facts.signature();
    for direction in [Direction::Up, Direction::Down] {
        let slot = rs.backoff_mut(direction);
        if slot
            .as_ref()
            .is_some_and(|b| b.until <= ctx.now || !b.signature.same_config(&signature))
        {
            *slot = None;
        }
    }

    if ctx.res == Resource::Cpu
        && let Some(take_back) = onlining::judge(ctx, rs)
    {
        return take_back;
    }
    let view = ctx.view();
    if !view.points.is_empty() {
        return decide_on_samples(ctx, rs, view);
    }

    let frac = match ctx.reading() {
        Ok(frac) => frac,
        Err(why) => {
            // Unknown data: no action, and the breach starts again once data is back.
            rs.reset_breach();
            rs.observed_at = None;
            return ctx.make(Action::Keep, format!("{name}: {why}: keep"));
        }
    };
    let gap_limit = ctx.policy.window.as_secs().max(MIN_BREACH_GAP_SECS);
    if rs
        .observed_at
        .is_some_and(|t| ctx.now.saturating_sub(t) > gap_limit)
    {
        rs.reset_breach();
    }
    rs.observed_at = Some(ctx.now);

    // A container's stalls count as the demand they hide (a breach, or no shrink).
    let pct = frac * ctx.demand_factor() * 100.0;
    if pct > ctx.rp.high {
        scale_up(ctx, rs, frac, ctx.now)
    } else if pct < ctx.rp.low {
        scale_down(ctx, rs, frac)
    } else {
        rs.reset_breach();
        within_band(ctx, frac)
    }
}

/// The decision measured on the samples' own timestamps: a scale-up needs the short view
/// above `high` on every sample for `up_after` (quick up); a scale-down needs the window
/// below `low` for `down_after`, and any sample above `high` ends that (slow down). Samples
/// are taken up where the last run left off; more than a few missing in a row end a breach.
fn decide_on_samples(ctx: &Ctx<'_>, rs: &mut ResourceState, view: &SampleView) -> ResourceDecision {
    let (name, rp) = (ctx.name(), ctx.rp);
    // A container's stalls count as the demand they hide (see `decide_on_load`).
    let demand = ctx.demand_factor();
    let step = view.step_secs.max(1);
    let max_gap = (3 * step).max(MIN_SAMPLE_GAP_SECS);
    for point in &view.points {
        let t = point.t;
        if rs.observed_at.is_some_and(|seen| t <= seen) {
            continue;
        }
        if rs.observed_at.is_some_and(|seen| t - seen > max_gap) {
            rs.reset_breach();
        }
        // A breach starts with the first sample above `high` (each sample covers the
        // `step` seconds before its timestamp) and lasts while the short view stays above
        // it: quick to notice, not ended by one low sample.
        if point.sample * demand * 100.0 > rp.high {
            rs.above_since.get_or_insert(t.saturating_sub(step));
            rs.below_since = None;
        } else if point.short * demand * 100.0 <= rp.high {
            rs.above_since = None;
        }
        rs.observed_at = Some(t);
    }
    let Some(newest) = view.points.last() else {
        return ctx.make(Action::Keep, format!("{name}: no data: keep"));
    };
    if ctx.now.saturating_sub(newest.t) > max_gap {
        // Only an old sample: nobody knows what happened since.
        rs.reset_breach();
        return ctx.make(
            Action::Keep,
            format!(
                "{name}: no sample for {}: keep",
                fmt_duration(ctx.now.saturating_sub(newest.t))
            ),
        );
    }
    // The figure the decision states and sizes on: the short view, or the newest sample
    // where that alone keeps the breach alive.
    let (newest, short) = if newest.short * demand * 100.0 > rp.high {
        (newest.t, newest.short)
    } else {
        (newest.t, newest.short.max(newest.sample))
    };
    // Above `high` without a breach running: one that scale_up ended (an untrusted memory
    // figure), seen again on a sample the last run already saw.
    if rs.above_since.is_some() || short * demand * 100.0 > rp.high {
        return scale_up(ctx, rs, short.min(1.0), newest);
    }
    match ctx.reading() {
        Ok(long) if long * demand * 100.0 < rp.low => scale_down(ctx, rs, long),
        Ok(long) => {
            rs.below_since = None;
            within_band(ctx, long.max(short.min(1.0)))
        }
        Err(why) => {
            rs.below_since = None;
            ctx.make(Action::Keep, format!("{name}: {why} in the window: keep"))
        }
    }
}

fn within_band(ctx: &Ctx<'_>, frac: f64) -> ResourceDecision {
    ctx.make(
        Action::Keep,
        format!(
            "{} {}% within {}-{}%: keep",
            ctx.name(),
            round_pct(frac * 100.0),
            num(ctx.rp.low),
            num(ctx.rp.high)
        ),
    )
}

/// The checks between "the breach held long enough" and sizing, the same for both
/// directions: switched off, still waiting, cooldown, back-off, not live-scalable. `Ok` is
/// the reason's head (with what the breach needs) to go on with.
fn gate(
    ctx: &Ctx<'_>,
    rs: &ResourceState,
    direction: Direction,
    head: String,
    held: u64,
) -> Result<String, ResourceDecision> {
    let (name, rp, now) = (ctx.name(), ctx.rp, ctx.now);
    let (allowed, switch, needs, cooldown, what) = match direction {
        Direction::Up => (
            rp.scale_up,
            "scaling up is off (scale_up = false)",
            rp.up_after,
            rp.cooldown_up,
            "scale-up",
        ),
        Direction::Down => (
            rp.scale_down,
            "scaling down is off (scale_down = false)",
            rp.down_after,
            rp.cooldown_down,
            "scale-down",
        ),
    };
    let needs = needs.as_secs();
    if !allowed {
        return Err(ctx.make(Action::Keep, format!("{head}, but {switch}: keep")));
    }
    if held < needs {
        return Err(ctx.make(
            Action::Keep,
            format!("{head} (needs {}): waiting", fmt_duration(needs)),
        ));
    }
    let head = format!("{head} (needs {})", fmt_duration(needs));
    if direction == Direction::Down && ctx.facts.windows == Some(true) {
        return Err(ctx.make(
            Action::Blocked(BlockedBy::GrowOnly),
            format!(
                "{head}: blocked: Windows does not unplug {} (it takes them live but never \
                 gives them back; shrink it with a restart)",
                match ctx.res {
                    Resource::Cpu => "vCPUs",
                    Resource::Memory => "memory",
                }
            ),
        ));
    }
    if let Some(left) = cooldown_left(rs, cooldown, now) {
        return Err(ctx.make(
            Action::Keep,
            format!(
                "{head}, but {name} cooldown: {} left after the last change: waiting",
                fmt_left(left)
            ),
        ));
    }
    if let Some(b) = backoff_in_force(ctx, rs, direction) {
        return Err(ctx.make(
            Action::Blocked(BlockedBy::Backoff),
            backoff_reason(&head, what, b, now),
        ));
    }
    if let Some(fix) = not_live_scalable(ctx) {
        return Err(ctx.make(
            Action::Blocked(BlockedBy::NotLiveScalable),
            format!("{head}, but {fix}"),
        ));
    }
    Ok(head)
}

/// `at`: when the breach is measured to (the newest sample, or the run's time).
fn scale_up(ctx: &Ctx<'_>, rs: &mut ResourceState, frac: f64, at: u64) -> ResourceDecision {
    let (name, rp) = (ctx.name(), ctx.rp);
    rs.below_since = None;
    if ctx.res == Resource::Memory && ctx.util.memory_source != MemorySource::Guest {
        // A host-side figure counts what the guest ever touched (page cache included): it
        // sits near the allocation and follows every increase, so growing on it never ends.
        rs.above_since = None;
        return ctx.make(
            Action::Keep,
            format!(
                "{name} {} > {}%, but {}: not scaling up",
                pct_against(frac * 100.0, rp.high),
                num(rp.high),
                untrusted_memory_source(ctx.util.memory_source)
            ),
        );
    }
    let since = *rs.above_since.get_or_insert(at);
    let held = at.saturating_sub(since);
    let head = format!(
        "{name} {} > {}% for {}",
        pct_against(frac * ctx.demand_factor() * 100.0, rp.high),
        num(rp.high),
        fmt_duration(held)
    );
    let head = match gate(ctx, rs, Direction::Up, head, held) {
        Ok(head) => head,
        Err(decision) => return decision,
    };
    let from = ctx.current();
    let sized = match ctx.res {
        Resource::Cpu => size_cpu_up(ctx, frac),
        Resource::Memory if ctx.facts.kind == GuestKind::Ct => container::size_memory_up(ctx, frac),
        Resource::Memory => size_memory_up(ctx, frac),
    };
    let to = match sized {
        Ok(to) => to,
        Err((by, why)) => {
            return ctx.make(Action::Blocked(by), format!("{head}, but {why}: blocked"));
        }
    };
    if let Some(why) = host_guard(ctx, from, to) {
        return ctx.make(
            Action::Blocked(BlockedBy::HostGuard),
            format!("{head}, but {why}: blocked"),
        );
    }
    ctx.make(
        Action::Up { from, to },
        format!(
            "{head}{}: {}",
            container::pressure_note(ctx),
            fmt_change_of(ctx.facts.kind, ctx.res, from, to)
        ),
    )
}

/// Why a memory figure that is not the guest's own is not acted on.
fn untrusted_memory_source(source: MemorySource) -> &'static str {
    match source {
        MemorySource::Host => "the memory figure is a host-side estimate (no balloon statistics)",
        _ => "the source of the memory figure is unknown (no balloon statistics known)",
    }
}

fn scale_down(ctx: &Ctx<'_>, rs: &mut ResourceState, frac: f64) -> ResourceDecision {
    let (name, rp, now) = (ctx.name(), ctx.rp, ctx.now);
    rs.above_since = None;
    let pct = pct_against(frac * 100.0, rp.low);
    if ctx.res == Resource::Memory && ctx.util.memory_source != MemorySource::Guest {
        // An untrusted figure must not start (or continue) a shrink.
        rs.below_since = None;
        return ctx.make(
            Action::Keep,
            format!(
                "{name} {pct} < {}%, but {}: not scaling down",
                num(rp.low),
                untrusted_memory_source(ctx.util.memory_source)
            ),
        );
    }
    let since = *rs.below_since.get_or_insert(now);
    let held = now.saturating_sub(since);
    let head = format!("{name} {pct} < {}% for {}", num(rp.low), fmt_duration(held));
    let head = match gate(ctx, rs, Direction::Down, head, held) {
        Ok(head) => head,
        Err(decision) => return decision,
    };
    let from = ctx.current();
    let sized = match ctx.res {
        Resource::Cpu => size_cpu_down(ctx, frac),
        Resource::Memory if ctx.facts.kind == GuestKind::Ct => {
            container::size_memory_down(ctx, frac)
        }
        Resource::Memory => size_memory_down(ctx, frac),
    };
    let to = match sized {
        Ok(to) => to,
        // Nothing to shrink is not a problem: keep.
        Err(why) => return ctx.make(Action::Keep, format!("{head}, but {why}: keep")),
    };
    let mut reason = format!(
        "{head}: {}",
        fmt_change_of(ctx.facts.kind, ctx.res, from, to)
    );
    let mut balloon_mib = None;
    if ctx.res == Resource::Memory
        && let Some(balloon) = ctx.facts.balloon_mib
        && balloon > to
    {
        // `balloon` must stay <= `memory`; 0 (no balloon device) is never above.
        balloon_mib = Some(to);
        reason.push_str(&format!(", balloon {balloon} → {to} MiB"));
    }
    ResourceDecision {
        resource: ctx.res,
        action: Action::Down { from, to },
        reason,
        balloon_mib,
        by_window: None,
    }
}

/// The back-off that blocks a change in `direction`, if any. Expired back-offs and those of
/// another config were already dropped. One recorded with a digest cannot be confirmed
/// before the config (and its digest) is read: like any unknown, that does not block, and the
/// second call, with the digest, decides.
pub(super) fn backoff_in_force<'a>(
    ctx: &Ctx<'_>,
    rs: &'a ResourceState,
    direction: Direction,
) -> Option<&'a crate::state::Backoff> {
    rs.backoff(direction)
        .filter(|b| b.signature.digest.is_none() || ctx.facts.digest.is_some())
}

/// Seconds of cooldown left after the resource's last change, if any.
fn cooldown_left(rs: &ResourceState, cooldown: Duration, now: u64) -> Option<u64> {
    let change = rs.last_change.as_ref()?;
    let ends = change.at.saturating_add(cooldown.as_secs());
    (now < ends).then(|| ends - now)
}

pub(super) fn backoff_reason(
    head: &str,
    what: &str,
    b: &crate::state::Backoff,
    now: u64,
) -> String {
    let message = b.message.lines().next().unwrap_or("").trim();
    format!(
        "{head}, but the last {what} was refused ({message}): backing off, {} left or until the config changes",
        fmt_left(b.until.saturating_sub(now))
    )
}

/// What keeps the resource from being changed live, with the fix; `None` when fine or unknown.
pub(super) fn not_live_scalable(ctx: &Ctx<'_>) -> Option<String> {
    readiness::blocked_reason(ctx.facts, ctx.res)
}

#[cfg(test)]
mod tests;
