//! Memory sizing of containers: plain MiB (no DIMM grid, nothing to hotplug), and a shrink
//! that can never take a container below what it uses.
//!
//! Why a rule of its own: pve-container writes `memory` to the cgroup's `memory.max` at once
//! (LXC/Config.pm `vmconfig_hotplug_pending` → `change_memory_limit`) and the call succeeds even
//! below the container's use — the kernel then reclaims and OOM-kills processes inside. So a
//! container shrinks only on a fresh sample, to its use (the larger of the window and the newest
//! sample) plus the margin, and by at most [`MAX_SHRINK_FRACTION`] of its size per change.

use super::format::*;
use super::sizing::{Sized, ceil_units, wanted_up};
use super::*;

/// A shrink needs a memory sample at most this old (seconds): never on stale data.
pub const FRESH_SECS: u64 = 180;
/// At most this share of the size goes in one shrink (small steps).
pub const MAX_SHRINK_FRACTION: f64 = 0.125;
/// The smallest container pvescale sizes to (MiB): pve-container's own minimum is 16.
const FLOOR_MIB: u64 = 64;

pub(super) fn size_memory_up(ctx: &Ctx<'_>, frac: f64) -> Sized<(BlockedBy, String)> {
    let c = ctx.current();
    let hard = ctx.rp.max;
    if c >= hard {
        return Err((
            BlockedBy::Limit,
            format!("already at the maximum {hard} MiB (policy max)"),
        ));
    }
    let upper = c.saturating_add(ctx.rp.max_step_up.max(1)).min(hard);
    Ok(wanted_up(ctx, frac, c).max(c + 1).min(upper))
}

pub(super) fn size_memory_down(ctx: &Ctx<'_>, frac: f64) -> Sized<String> {
    let c = ctx.current();
    let newest = fresh_sample(ctx.util.memory_view.points.as_slice(), ctx.now)?;
    let in_use = frac.max(newest) * c as f64;
    let margin = ctx.policy.memory_margin.max(0.0);
    let with_margin = ceil_units(in_use * (1.0 + margin / 100.0));
    let lower_hard = ctx.rp.min.max(FLOOR_MIB).max(with_margin);
    if c <= lower_hard {
        return Err(if with_margin > ctx.rp.min.max(FLOOR_MIB) {
            format!(
                "{} MiB in use + {}% margin needs {lower_hard} MiB",
                in_use.round(),
                num(margin)
            )
        } else {
            format!("already at the minimum {lower_hard} MiB")
        });
    }
    let small_step = ((c as f64 * MAX_SHRINK_FRACTION) as u64).max(1);
    let step = ctx.rp.max_step_down.max(1).min(small_step);
    let wanted = ceil_units(in_use / ctx.target());
    Ok(wanted
        .max(c.saturating_sub(step))
        .max(lower_hard)
        .min(c - 1))
}

/// Pressure below this (a fraction of time stalled) says nothing about unmet demand.
pub const PRESSURE_SIGNAL: f64 = 0.05;
/// Pressure is read as at most this, so one reading cannot ask for an unbounded size.
const PRESSURE_CAP: f64 = 0.9;

/// A container's stall fraction for the resource, where it is a signal.
fn pressure_of(ctx: &Ctx<'_>) -> Option<f64> {
    if ctx.facts.kind != GuestKind::Ct {
        return None;
    }
    let p = ctx.facts.pressure?;
    let value = match ctx.res {
        Resource::Cpu => p.cpu_some?,
        Resource::Memory => p.memory_some?,
    };
    (value.is_finite() && value >= PRESSURE_SIGNAL).then_some(value.min(PRESSURE_CAP))
}

/// The demand of a container wanting more, as a fraction of its size, from its own cgroup's
/// pressure: busy `frac` of the time while tasks stalled `p` of it reads as `frac / (1 − p)`
/// (what it would use unstalled). `None` without a signal: the usual rules size the step.
pub(super) fn demand_from_pressure(ctx: &Ctx<'_>, frac: f64) -> Option<f64> {
    let p = pressure_of(ctx)?;
    Some(frac / (1.0 - p))
}

/// `, pressure 35%` where a container's pressure sized its step.
pub(super) fn pressure_note(ctx: &Ctx<'_>) -> String {
    pressure_of(ctx)
        .map(|p| format!(", pressure {}%", num((p * 100.0).round())))
        .unwrap_or_default()
}

/// The newest memory sample's fraction, if it is fresh; else why not.
fn fresh_sample(points: &[ViewPoint], now: u64) -> Result<f64, String> {
    match points.iter().max_by_key(|p| p.t) {
        Some(p) if now.saturating_sub(p.t) <= FRESH_SECS => Ok(p.sample),
        Some(p) => Err(format!(
            "the newest memory sample is {} old (a container shrinks only on one at most {} old)",
            fmt_duration(now.saturating_sub(p.t)),
            fmt_duration(FRESH_SECS)
        )),
        None => Err(
            "no new memory sample since the last run (a container shrinks only on \
                     fresh data)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MIN, T0, facts, node, util};
    use super::*;
    use crate::state::model::VmState;

    /// A container of 4096 MiB whose window reads `window` of it in use, run every minute for
    /// two hours; `newest(t)` is the newest sample each run sees (`None`: none new).
    fn shrink_after(window: f64, newest: impl Fn(u64) -> Option<ViewPoint>) -> Decision {
        let policy = Policy::default();
        let f = VmFacts {
            kind: GuestKind::Ct,
            ..facts()
        };
        let mut state: Option<VmState> = None;
        let mut last = None;
        for t in (T0..T0 + 120 * MIN).step_by(MIN as usize) {
            let mut u = util(0.5, window);
            u.memory_view.points = newest(t).into_iter().collect();
            u.memory_view.step_secs = 60;
            let (d, s) = decide(&policy, &f, &u, &node(), state.as_ref(), t);
            state = Some(s);
            last = Some(d);
        }
        last.unwrap_or_else(|| unreachable!("the loop runs"))
    }

    fn point(t: u64, sample: f64) -> ViewPoint {
        ViewPoint {
            t,
            sample,
            short: sample,
        }
    }

    #[test]
    fn an_idle_container_shrinks_in_small_steps_off_the_dimm_grid() {
        let d = shrink_after(0.1, |t| Some(point(t - 30, 0.1)));
        let (from, to) = d.memory.change().unwrap_or_else(|| panic!("{d:?}"));
        assert_eq!(from, 4096);
        // At most an eighth at a time (a VM would drop to 1024 MiB, its DIMM grid's floor).
        assert_eq!(to, 4096 - 512, "{}", d.memory.reason);
    }

    #[test]
    fn a_container_never_shrinks_below_its_newest_use_plus_the_margin() {
        // The window says 10 %, the newest sample 80 %: 3277 MiB in use + 15 % = 3768 MiB.
        let d = shrink_after(0.1, |t| Some(point(t - 30, 0.8)));
        let (_, to) = d.memory.change().unwrap_or_else(|| panic!("{d:?}"));
        let in_use = 0.8 * 4096.0;
        let margin = Policy::default().memory_margin / 100.0;
        assert!(
            to as f64 >= in_use * (1.0 + margin),
            "{to}: {}",
            d.memory.reason
        );
    }

    #[test]
    fn a_container_never_shrinks_on_stale_or_no_new_data() {
        for (what, d) in [
            ("none new", shrink_after(0.1, |_| None)),
            (
                "stale",
                shrink_after(0.1, |t| Some(point(t - FRESH_SECS - 60, 0.1))),
            ),
        ] {
            assert!(!d.memory.is_change(), "{what}: {d:?}");
        }
        // A VM shrinks on the same window figure without new samples: the rule is the
        // container's.
        let d = shrink_after(0.1, |_| None);
        assert!(
            d.memory.reason.contains("fresh data"),
            "{}",
            d.memory.reason
        );
    }

    #[test]
    fn a_busy_container_grows_by_plain_mib() {
        let policy = Policy::default();
        let f = VmFacts {
            kind: GuestKind::Ct,
            memory_mib: 1000,
            ..facts()
        };
        let d = super::super::tests::hold(
            &policy,
            &f,
            &util(0.5, 0.97),
            &node(),
            None,
            T0,
            T0 + 30 * MIN,
        )
        .0;
        let (from, to) = d.memory.change().unwrap_or_else(|| panic!("{d:?}"));
        assert_eq!(from, 1000);
        assert!(to > from && to <= from + policy.memory.max_step_up, "{to}");
        assert_ne!(to % 1024, 0, "not rounded to a DIMM size: {to}");
    }

    /// The CPU step after 30 busy minutes at 97 %, for a guest of `kind` with `pressure`.
    fn cpu_up(kind: GuestKind, pressure: Option<f64>) -> Decision {
        let mut policy = Policy::default();
        policy.cpu.max_step_up = 16;
        policy.cpu.max = 16;
        let f = VmFacts {
            kind,
            max_vcpus: Some(16),
            pressure: pressure.map(|p| Pressure {
                cpu_some: Some(p),
                memory_some: None,
            }),
            ..facts()
        };
        let u = util(0.97, 0.5);
        super::super::tests::hold(&policy, &f, &u, &node(), None, T0, T0 + 30 * MIN).0
    }

    #[test]
    fn a_containers_pressure_sizes_its_step_up() {
        let to = |d: &Decision| d.cpu.change().map(|(_, to)| to);
        let plain = cpu_up(GuestKind::Ct, None);
        let stalled = cpu_up(GuestKind::Ct, Some(0.5));
        // 0.97 of 2 cores busy while stalled half the time: about 3.9 cores wanted.
        assert!(to(&stalled) > to(&plain), "{stalled:?} vs {plain:?}");
        assert!(
            stalled.cpu.reason.contains("pressure 50%"),
            "{}",
            stalled.cpu.reason
        );
        // Too little to say anything, or a VM's (the host's) figure: the usual step.
        assert_eq!(to(&cpu_up(GuestKind::Ct, Some(0.01))), to(&plain));
        assert_eq!(to(&cpu_up(GuestKind::Vm, Some(0.5))), to(&plain));
    }

    /// The CPU decision after 30 minutes at `busy` of 2 cores, with `pressure` (CT or VM).
    fn cpu_after(kind: GuestKind, busy: f64, pressure: Option<f64>) -> Decision {
        let f = VmFacts {
            kind,
            pressure: pressure.map(|p| Pressure {
                cpu_some: Some(p),
                memory_some: None,
            }),
            ..facts()
        };
        let u = util(busy, 0.5);
        let policy = Policy::default();
        super::super::tests::hold(&policy, &f, &u, &node(), None, T0, T0 + 30 * MIN).0
    }

    #[test]
    fn a_containers_stalls_count_as_demand_below_high_and_stop_a_shrink() {
        // 70 % busy (below high 80 %) while stalled 30 % of the time: 100 % wanted.
        let stalled = cpu_after(GuestKind::Ct, 0.7, Some(0.3));
        assert!(
            matches!(stalled.cpu.action, Action::Up { .. }),
            "{stalled:?}"
        );
        assert!(
            stalled.cpu.reason.contains("pressure 30%"),
            "{}",
            stalled.cpu.reason
        );
        for d in [
            cpu_after(GuestKind::Ct, 0.7, None),
            cpu_after(GuestKind::Vm, 0.7, Some(0.3)),
        ] {
            assert!(!d.cpu.is_change(), "no stall signal, or a VM's: {d:?}");
        }
        // 20 % busy (below low 25 %): idle, unless stalled.
        assert!(matches!(
            cpu_after(GuestKind::Ct, 0.2, None).cpu.action,
            Action::Down { .. }
        ));
        let d = cpu_after(GuestKind::Ct, 0.2, Some(0.3));
        assert!(!d.cpu.is_change(), "a stalled container is not idle: {d:?}");
    }
}
