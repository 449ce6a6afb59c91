//! Sizing: how far one step goes, within `min`/`max`, the steps, the live envelope (the DIMM
//! grid, the host's maximum) and the host guard.

use super::format::*;
use super::*;
use crate::dimm;

/// `ceil(x)` as a size, tolerant of floating-point noise just above an integer.
pub(super) fn ceil_units(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // `as` saturates on overflow.
        (x - 1e-9).ceil() as u64
    } else {
        0
    }
}

pub(super) type Sized<E> = Result<u64, E>;

pub(super) fn size_cpu_up(ctx: &Ctx<'_>, frac: f64) -> Sized<(BlockedBy, String)> {
    let c = ctx.current();
    let mut upper = ctx.rp.max;
    let mut by = BlockedBy::Limit;
    if let Some(envelope) = ctx.facts.max_vcpus.map(u64::from)
        && envelope < upper
    {
        upper = envelope;
        by = BlockedBy::Envelope;
    }
    if c >= upper {
        let why = match by {
            BlockedBy::Envelope if ctx.facts.kind == GuestKind::Ct => format!(
                "already at the node's {} (a container's cores are host CPUs)",
                fmt_size(Resource::Cpu, upper)
            ),
            BlockedBy::Envelope => format!(
                "already at sockets × cores = {} (more needs more cores or sockets, then a cold restart)",
                fmt_size(Resource::Cpu, upper)
            ),
            _ => format!(
                "already at the maximum {} (policy max)",
                fmt_size(Resource::Cpu, upper)
            ),
        };
        return Err((by, why));
    }
    let wanted = wanted_up(ctx, frac, c);
    let step = ctx.rp.max_step_up.max(1);
    Ok(wanted.max(c + 1).min(c.saturating_add(step)).min(upper))
}

pub(super) fn size_cpu_down(ctx: &Ctx<'_>, frac: f64) -> Sized<String> {
    let c = ctx.current();
    let lower = ctx.rp.min.max(1);
    if c <= lower {
        return Err(format!(
            "already at the minimum {}",
            fmt_size(Resource::Cpu, lower)
        ));
    }
    let wanted = ceil_units(frac * c as f64 / ctx.target());
    let step = ctx.rp.max_step_down.max(1);
    Ok(wanted.max(c.saturating_sub(step)).max(lower).min(c - 1))
}

/// Memory up: toward the target, at most `max_step_up` (but at least one DIMM), at most `max`,
/// rounded up to the DIMM grid (down where rounding up would break a bound).
pub(super) fn size_memory_up(ctx: &Ctx<'_>, frac: f64) -> Sized<(BlockedBy, String)> {
    let c = ctx.current();
    // The live envelope: the grid, within the host's maximum for this VM where known.
    let envelope = match ctx.facts.host_max_memory_mib {
        Some(host_max) => dimm::round_down(host_max).unwrap_or(dimm::STATIC_MIB),
        None => dimm::max_on_grid(),
    };
    let (hard, by) = if ctx.rp.max < envelope {
        (dimm::round_down(ctx.rp.max), BlockedBy::Limit)
    } else {
        (Some(envelope), BlockedBy::Envelope)
    };
    let Some(hard) = hard else {
        return Err((
            BlockedBy::Limit,
            format!(
                "the maximum {} MiB is below the smallest hotplug size {} MiB",
                ctx.rp.max,
                dimm::STATIC_MIB
            ),
        ));
    };
    if c >= hard {
        let why = match by {
            BlockedBy::Envelope => match ctx.facts.host_max_memory_mib {
                Some(host_max) => format!(
                    "already at the largest hotpluggable size {hard} MiB within the host's \
                     maximum of {host_max} MiB for this VM"
                ),
                None => format!("already at the largest hotpluggable size {hard} MiB"),
            },
            _ => format!("already at the maximum {hard} MiB (policy max)"),
        };
        return Err((by, why));
    }
    let upper = c.saturating_add(ctx.rp.max_step_up.max(1)).min(hard);
    let wanted = wanted_up(ctx, frac, c);
    let t = wanted.max(c + 1).min(upper);
    let mut to = match dimm::round_up(t) {
        Some(up) if up <= upper => up,
        _ => dimm::round_down(t).unwrap_or(0),
    };
    if to <= c {
        // The step is smaller than the grid's spacing here: one DIMM is the least possible.
        to = dimm::next_above(c).filter(|&n| n <= hard).unwrap_or(c);
    }
    if to <= c {
        return Err((
            by,
            format!("no larger size on the DIMM grid within {hard} MiB"),
        ));
    }
    Ok(to)
}

/// Memory down: toward the target, at most `max_step_down` (but at least one DIMM), never
/// below `min` nor below what is in use plus the margin, rounded down to the DIMM grid (up where
/// rounding down would break a bound).
pub(super) fn size_memory_down(ctx: &Ctx<'_>, frac: f64) -> Sized<String> {
    let c = ctx.current();
    let in_use = frac * c as f64;
    let margin = ctx.policy.memory_margin.max(0.0);
    let with_margin = ceil_units(in_use * (1.0 + margin / 100.0));
    let policy_floor = ctx.rp.min.max(dimm::STATIC_MIB);
    let Some(lower_hard) = dimm::round_up(policy_floor.max(with_margin)) else {
        return Err(format!(
            "in use + {}% margin is above the largest hotpluggable size",
            num(margin)
        ));
    };
    if c <= lower_hard {
        return Err(if with_margin > policy_floor {
            format!(
                "{} MiB in use + {}% margin needs {lower_hard} MiB",
                in_use.round(),
                num(margin)
            )
        } else {
            format!("already at the minimum {lower_hard} MiB")
        });
    }
    let lower = c
        .saturating_sub(ctx.rp.max_step_down.max(1))
        .max(lower_hard);
    let wanted = ceil_units(in_use / ctx.target());
    let t = wanted.max(lower).min(c - 1);
    let mut to = match dimm::round_down(t) {
        Some(down) if down >= lower => down,
        _ => dimm::round_up(t).unwrap_or(c),
    };
    if to >= c {
        // The step is smaller than the grid's spacing here: one DIMM is the least possible.
        to = dimm::next_below(c)
            .filter(|&n| n >= lower_hard)
            .unwrap_or(c);
    }
    if to >= c {
        return Err("no smaller size on the DIMM grid".into());
    }
    Ok(to)
}

/// Host guard for a scale-up from `from` to `to`: why it is blocked, if it is.
///
/// A guard that cannot see its node's figures blocks (the safe side): a missing node figure is
/// usually a node that did not answer this run, and the next run retries; if it is permanent
/// (no `Sys.Audit` on `/`), `status` shows this reason on every wanted scale-up. A guard set to
/// 100 % or more is off and needs no figures.
pub(super) fn host_guard(ctx: &Ctx<'_>, from: u64, to: u64) -> Option<String> {
    let guard = &ctx.policy.host;
    let node = if ctx.node.name.is_empty() {
        ctx.facts.node.as_str()
    } else {
        ctx.node.name.as_str()
    };
    match ctx.node.cpu.filter(|c| c.is_finite() && *c >= 0.0) {
        Some(cpu) if cpu * 100.0 > guard.max_cpu => {
            return Some(format!(
                "node {node} cpu is at {} (max {}%)",
                pct_against(cpu * 100.0, guard.max_cpu),
                num(guard.max_cpu)
            ));
        }
        None if guard.max_cpu < 100.0 => {
            return Some(format!(
                "node {node}'s cpu load is unknown (the host guard needs it; Sys.Audit on /?)"
            ));
        }
        _ => {}
    }
    if ctx.res == Resource::Memory {
        match (ctx.node.mem_used_mib, ctx.node.mem_total_mib) {
            (Some(used), Some(total)) if total > 0 => {
                let delta = to.saturating_sub(from);
                let after = used.saturating_add(delta) as f64 / total as f64 * 100.0;
                if after > guard.max_memory {
                    return Some(format!(
                        "node {node} would reach {} memory with +{delta} MiB (max {}%)",
                        pct_against(after, guard.max_memory),
                        num(guard.max_memory)
                    ));
                }
            }
            _ if guard.max_memory < 100.0 => {
                return Some(format!(
                    "node {node}'s memory use is unknown (the host guard needs it; Sys.Audit on /?)"
                ));
            }
            _ => {}
        }
    }
    None
}

/// The size a scale-up aims at: toward the target; or, for a resource pinned at its size,
/// which shows no demand beyond it, the size times `saturated_factor`.
pub(super) fn wanted_up(ctx: &Ctx<'_>, frac: f64, current: u64) -> u64 {
    // A container's own pressure tells how much more it wants.
    if let Some(demand) = super::container::demand_from_pressure(ctx, frac) {
        return ceil_units(demand * current as f64 / ctx.target());
    }
    if frac >= SATURATED {
        ceil_units(current as f64 * ctx.rp.saturated_factor.max(1.0))
    } else {
        ceil_units(frac * current as f64 / ctx.target())
    }
}
