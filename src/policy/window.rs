//! Schedule windows applied to the decision on the load.
//!
//! A floor raises a smaller resource to it, without waiting for a breach or a cooldown (the
//! window is the admin's plan, not a reaction to load), and stops a shrink at it. A freeze
//! turns a change into keep and says what it prevented; it wins over a floor. Breaches go on
//! being tracked underneath, so one that held through a freeze acts when the window ends.

use super::format::*;
use super::sizing::host_guard;
use super::*;
use crate::dimm;

pub(super) fn apply(
    ctx: &Ctx<'_>,
    rs: &ResourceState,
    decision: ResourceDecision,
) -> ResourceDecision {
    if decision.action == Action::Skip || ctx.policy.windows.is_empty() {
        return decision;
    }
    let decision = apply_floor(ctx, rs, decision);
    apply_freeze(ctx, decision)
}

fn apply_floor(ctx: &Ctx<'_>, rs: &ResourceState, decision: ResourceDecision) -> ResourceDecision {
    let Some((window, floor)) = ctx
        .policy
        .windows
        .iter()
        .filter_map(|w| w.effect.floor(ctx.res).map(|f| (w, f)))
        .max_by_key(|(_, f)| *f)
    else {
        return decision;
    };
    let Some(size) = floor_size(ctx, floor) else {
        return decision;
    };
    let held = ByWindow::Floor {
        window: window.name.clone(),
        floor: size,
    };
    let head = format!(
        "{} sets a floor of {} until {}",
        window.label(),
        floor_text(ctx.res, floor, size),
        window.until_local
    );
    match decision.action {
        Action::Up { to, .. } if to >= size => decision,
        Action::Down { from, to } if to < size => {
            let (action, reason, balloon_mib) = if from <= size {
                (
                    Action::Keep,
                    format!("{}, but {head}: keep", decision.reason),
                    None,
                )
            } else {
                // The shrink goes as far as the floor; a balloon above it comes down with it.
                let balloon = ctx.facts.balloon_mib.filter(|b| *b > size).map(|_| size);
                (
                    Action::Down { from, to: size },
                    format!(
                        "{}; {head}: {} instead",
                        decision.reason,
                        fmt_change_of(ctx.facts.kind, ctx.res, from, size)
                    ),
                    balloon,
                )
            };
            ResourceDecision {
                resource: ctx.res,
                action,
                reason,
                balloon_mib,
                by_window: Some(held),
            }
        }
        _ if ctx.current() < size => raise_to_floor(ctx, rs, head, size, held),
        _ => decision,
    }
}

/// The raise to the floor: the same guards as a scale-up on load, but no breach to wait for
/// and no cooldown.
fn raise_to_floor(
    ctx: &Ctx<'_>,
    rs: &ResourceState,
    head: String,
    size: u64,
    held: ByWindow,
) -> ResourceDecision {
    let from = ctx.current();
    let (action, reason) = if !ctx.rp.scale_up {
        (
            Action::Keep,
            format!(
                "{}: {head}, but scaling up is off (scale_up = false): keep",
                ctx.name()
            ),
        )
    } else if let Some(b) = backoff_in_force(ctx, rs, Direction::Up) {
        (
            Action::Blocked(BlockedBy::Backoff),
            backoff_reason(&format!("{}: {head}", ctx.name()), "scale-up", b, ctx.now),
        )
    } else if let Some(fix) = not_live_scalable(ctx) {
        (
            Action::Blocked(BlockedBy::NotLiveScalable),
            format!("{}: {head}, but {fix}", ctx.name()),
        )
    } else if let Some(why) = host_guard(ctx, from, size) {
        (
            Action::Blocked(BlockedBy::HostGuard),
            format!("{}: {head}, but {why}: blocked", ctx.name()),
        )
    } else {
        (
            Action::Up { from, to: size },
            format!(
                "{}: {head}: {}",
                ctx.name(),
                fmt_change_of(ctx.facts.kind, ctx.res, from, size)
            ),
        )
    };
    ResourceDecision {
        resource: ctx.res,
        action,
        reason,
        balloon_mib: None,
        by_window: Some(held),
    }
}

/// The size a floor asks for, within `max` and the live envelope, on the DIMM grid for memory.
fn floor_size(ctx: &Ctx<'_>, floor: u64) -> Option<u64> {
    match ctx.res {
        Resource::Cpu => {
            let envelope = ctx.facts.max_vcpus.map_or(u64::MAX, u64::from);
            Some(floor.min(ctx.rp.max).min(envelope).max(1))
        }
        Resource::Memory => {
            let host = ctx
                .facts
                .host_max_memory_mib
                .and_then(dimm::round_down)
                .unwrap_or(u64::MAX);
            let cap = ctx.rp.max.min(host).min(dimm::max_on_grid());
            let wanted = floor.min(cap);
            dimm::round_up(wanted)
                .filter(|up| *up <= cap)
                .or_else(|| dimm::round_down(wanted))
        }
    }
}

/// `4 vCPUs`, or `3072 MiB (set: 3000 MiB, on the DIMM grid)` where the size is not the one set.
fn floor_text(res: Resource, floor: u64, size: u64) -> String {
    if size == floor {
        return fmt_size(res, size);
    }
    let why = if size < floor {
        "within max and the live envelope"
    } else {
        "on the DIMM grid"
    };
    format!(
        "{} (set: {}, {why})",
        fmt_size(res, size),
        fmt_size(res, floor)
    )
}

fn apply_freeze(ctx: &Ctx<'_>, decision: ResourceDecision) -> ResourceDecision {
    let (Some((from, to)), Some(direction)) = (decision.change(), decision.direction()) else {
        return decision;
    };
    let freezing = ctx.policy.windows.iter().find(|w| match w.effect {
        WindowEffect::Freeze => true,
        WindowEffect::FreezeScaleDown => direction == Direction::Down,
        WindowEffect::Floor { .. } => false,
    });
    let Some(window) = freezing else {
        return decision;
    };
    let what = match window.effect {
        WindowEffect::Freeze => "freezes all changes",
        _ => "freezes scale-down",
    };
    ResourceDecision {
        resource: ctx.res,
        action: Action::Keep,
        reason: format!(
            "{}, but {} {what} until {}: keep",
            decision.reason,
            window.label(),
            window.until_local
        ),
        balloon_mib: None,
        by_window: Some(ByWindow::Prevented {
            window: window.name.clone(),
            direction,
            from,
            to,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MIN, T0, facts, hold, node, once, util};
    use super::*;

    fn window(effect: WindowEffect) -> WindowInForce {
        WindowInForce {
            name: "backup".into(),
            when: "Sat 01:00..05:00".into(),
            effect,
            until: T0 + 3600,
            until_local: "05:00".into(),
        }
    }

    fn with_windows(effects: &[WindowEffect]) -> Policy {
        Policy {
            windows: effects.iter().map(|e| window(*e)).collect(),
            ..Policy::default()
        }
    }

    fn floor(cpu: Option<u64>, memory_mib: Option<u64>) -> WindowEffect {
        WindowEffect::Floor { cpu, memory_mib }
    }

    #[test]
    fn a_freeze_prevents_a_scale_up_and_says_what_it_prevented() {
        let p = with_windows(&[WindowEffect::Freeze]);
        let (d, s) = hold(
            &p,
            &facts(),
            &util(0.88, 0.6),
            &node(),
            None,
            T0,
            T0 + 3 * MIN,
        );
        assert_eq!(d.cpu.action, Action::Keep);
        assert_eq!(
            d.cpu.reason,
            "cpu 88% > 80% for 3m (needs 2m): 2 → 4 vCPUs, but window \"backup\" \
             (Sat 01:00..05:00) freezes all changes until 05:00: keep"
        );
        assert_eq!(
            d.cpu.by_window,
            Some(ByWindow::Prevented {
                window: "backup".into(),
                direction: Direction::Up,
                from: 2,
                to: 4
            })
        );
        // The breach went on being tracked: once the window is over, the VM grows at once.
        let (after, _) = once(
            &Policy::default(),
            &facts(),
            &util(0.88, 0.6),
            Some(&s),
            T0 + 4 * MIN,
        );
        assert_eq!(after.cpu.action, Action::Up { from: 2, to: 4 });
    }

    #[test]
    fn a_scale_down_freeze_lets_scale_ups_through() {
        let p = with_windows(&[WindowEffect::FreezeScaleDown]);
        let (up, _) = hold(
            &p,
            &facts(),
            &util(0.88, 0.6),
            &node(),
            None,
            T0,
            T0 + 3 * MIN,
        );
        assert_eq!(up.cpu.action, Action::Up { from: 2, to: 4 });
        assert_eq!(up.cpu.by_window, None);
        let big = VmFacts {
            vcpus: 4,
            ..facts()
        };
        let (down, _) = hold(&p, &big, &util(0.1, 0.6), &node(), None, T0, T0 + 16 * MIN);
        assert_eq!(down.cpu.action, Action::Keep);
        assert!(
            down.cpu
                .reason
                .ends_with("freezes scale-down until 05:00: keep"),
            "{}",
            down.cpu.reason
        );
        assert!(matches!(
            down.cpu.by_window,
            Some(ByWindow::Prevented {
                direction: Direction::Down,
                ..
            })
        ));
    }

    #[test]
    fn a_floor_raises_an_idle_vm_at_once_even_in_its_cooldown() {
        let p = with_windows(&[floor(Some(4), Some(8192))]);
        let mut prev = VmState::default();
        prev.record_change(Resource::Cpu, Direction::Down, 3, 2, T0 - MIN);
        let (d, _) = once(&p, &facts(), &util(0.1, 0.5), Some(&prev), T0);
        assert_eq!(d.cpu.action, Action::Up { from: 2, to: 4 });
        assert_eq!(
            d.cpu.reason,
            "cpu: window \"backup\" (Sat 01:00..05:00) sets a floor of 4 vCPUs until 05:00: \
             2 → 4 vCPUs"
        );
        assert_eq!(
            d.memory.action,
            Action::Up {
                from: 4096,
                to: 8192
            }
        );
        assert_eq!(
            d.memory.by_window,
            Some(ByWindow::Floor {
                window: "backup".into(),
                floor: 8192
            })
        );
    }

    #[test]
    fn a_floor_stops_a_shrink_at_it() {
        let p = with_windows(&[floor(Some(4), None)]);
        let at_floor = VmFacts {
            vcpus: 4,
            ..facts()
        };
        let (d, _) = hold(
            &p,
            &at_floor,
            &util(0.05, 0.6),
            &node(),
            None,
            T0,
            T0 + 16 * MIN,
        );
        assert_eq!(d.cpu.action, Action::Keep);
        assert!(
            d.cpu.reason.contains("sets a floor of 4 vCPUs"),
            "{}",
            d.cpu.reason
        );
        let above = VmFacts {
            vcpus: 6,
            ..facts()
        };
        let steep = Policy {
            cpu: ResourcePolicy {
                max_step_down: 8,
                ..p.cpu.clone()
            },
            ..p.clone()
        };
        let (d, _) = hold(
            &steep,
            &above,
            &util(0.05, 0.6),
            &node(),
            None,
            T0,
            T0 + 16 * MIN,
        );
        assert_eq!(d.cpu.action, Action::Down { from: 6, to: 4 });
    }

    #[test]
    fn a_freeze_wins_over_a_floor() {
        let p = with_windows(&[floor(Some(4), None), WindowEffect::Freeze]);
        let (d, _) = once(&p, &facts(), &util(0.5, 0.6), None, T0);
        assert_eq!(d.cpu.action, Action::Keep);
        assert!(matches!(d.cpu.by_window, Some(ByWindow::Prevented { .. })));
    }

    #[test]
    fn a_floor_stays_within_max_the_envelope_and_the_dimm_grid() {
        let p = with_windows(&[floor(Some(16), Some(6000))]);
        let (d, _) = once(&p, &facts(), &util(0.5, 0.6), None, T0);
        assert_eq!(d.cpu.action, Action::Up { from: 2, to: 8 });
        assert!(
            d.cpu
                .reason
                .contains("8 vCPUs (set: 16 vCPUs, within max and the live envelope)"),
            "{}",
            d.cpu.reason
        );
        let (d, _) = once(&p, &facts(), &util(0.5, 0.6), None, T0);
        let Action::Up { to, .. } = d.memory.action else {
            panic!("memory is raised: {:?}", d.memory);
        };
        assert!(to >= 6000 && crate::dimm::is_on_grid(to), "{to}");
    }

    #[test]
    fn a_floor_keeps_the_scale_up_guards() {
        let p = with_windows(&[floor(Some(4), None)]);
        let no_hotplug = VmFacts {
            cpu_hotplug: Some(false),
            ..facts()
        };
        let (d, _) = once(&p, &no_hotplug, &util(0.5, 0.6), None, T0);
        assert_eq!(d.cpu.action, Action::Blocked(BlockedBy::NotLiveScalable));
        let off = Policy {
            cpu: ResourcePolicy {
                scale_up: false,
                ..p.cpu.clone()
            },
            ..p.clone()
        };
        let (d, _) = once(&off, &facts(), &util(0.5, 0.6), None, T0);
        assert_eq!(d.cpu.action, Action::Keep);
        assert!(
            d.cpu.reason.contains("scale_up = false"),
            "{}",
            d.cpu.reason
        );
    }
}
