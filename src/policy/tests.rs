//! Unit tests of the decision rules: each rule has a case that fails without it.

use std::time::Duration;

use super::*;
use crate::state::model::VmState;

pub(super) const T0: u64 = 1_700_000_000;
pub(super) const MIN: u64 = 60;

pub(super) fn facts() -> VmFacts {
    VmFacts {
        max_vcpus: Some(8),
        cpu_hotplug: Some(true),
        memory_hotplug: Some(true),
        numa: Some(true),
        balloon_mib: Some(0),
        pending: Some(vec![]),
        digest: Some("d1".into()),
        ..VmFacts::new(101, "pve1", 2, 4096)
    }
}

pub(super) fn util(cpu: f64, memory: f64) -> Utilisation {
    Utilisation {
        cpu: Some(cpu),
        memory: Some(memory),
        memory_source: MemorySource::Guest,
        cpu_samples: 30,
        memory_samples: 30,
        ..Utilisation::unknown()
    }
}

pub(super) fn node() -> NodeHeadroom {
    NodeHeadroom {
        name: "pve1".into(),
        mem_used_mib: Some(32 * 1024),
        mem_total_mib: Some(128 * 1024),
        cpu: Some(0.2),
    }
}

/// Runs `decide` every minute from `from` to `to` (inclusive) with the same inputs, feeding
/// the state forward; returns the last decision and state.
pub(super) fn hold(
    policy: &Policy,
    facts: &VmFacts,
    util: &Utilisation,
    node: &NodeHeadroom,
    state: Option<VmState>,
    from: u64,
    to: u64,
) -> (Decision, VmState) {
    let mut state = state;
    let mut t = from;
    loop {
        let (d, s) = decide(policy, facts, util, node, state.as_ref(), t);
        if t >= to {
            return (d, s);
        }
        state = Some(s);
        t += MIN;
    }
}

pub(super) fn once(
    policy: &Policy,
    facts: &VmFacts,
    util: &Utilisation,
    prev: Option<&VmState>,
    now: u64,
) -> (Decision, VmState) {
    decide(policy, facts, util, &node(), prev, now)
}

// --- band and hysteresis ---------------------------------------------------------------------

#[test]
fn inside_the_band_keeps() {
    let (d, s) = once(&Policy::default(), &facts(), &util(0.5, 0.6), None, T0);
    assert_eq!(d.cpu.action, Action::Keep);
    assert_eq!(d.cpu.reason, "cpu 50% within 25-80%: keep");
    assert_eq!(d.memory.action, Action::Keep);
    assert_eq!(d.memory.reason, "memory 60% within 40-85%: keep");
    assert_eq!(s.cpu.above_since, None);
    assert_eq!(s.last_seen, T0);
}

#[test]
fn scale_up_only_after_up_after() {
    let p = Policy::default();
    let u = util(0.93, 0.6);
    let (d, s) = once(&p, &facts(), &u, None, T0);
    assert_eq!(d.cpu.action, Action::Keep);
    assert_eq!(d.cpu.reason, "cpu 93% > 80% for 0s (needs 2m): waiting");
    assert_eq!(s.cpu.above_since, Some(T0));
    let (d, s) = once(&p, &facts(), &u, Some(&s), T0 + MIN);
    assert_eq!(d.cpu.reason, "cpu 93% > 80% for 1m (needs 2m): waiting");
    let (d, _) = once(&p, &facts(), &u, Some(&s), T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 2, to: 4 });
    assert_eq!(d.cpu.reason, "cpu 93% > 80% for 2m (needs 2m): 2 → 4 vCPUs");
}

#[test]
fn scale_down_only_after_down_after() {
    let p = Policy::default();
    let f = VmFacts {
        vcpus: 4,
        ..facts()
    };
    let u = util(0.12, 0.6);
    let (d, s) = hold(&p, &f, &u, &node(), None, T0, T0 + 6 * MIN);
    assert_eq!(d.cpu.action, Action::Keep);
    assert_eq!(d.cpu.reason, "cpu 12% < 25% for 6m (needs 15m): waiting");
    let (d, _) = hold(&p, &f, &u, &node(), Some(s), T0 + 7 * MIN, T0 + 15 * MIN);
    assert_eq!(d.cpu.action, Action::Down { from: 4, to: 3 });
    assert_eq!(
        d.cpu.reason,
        "cpu 12% < 25% for 15m (needs 15m): 4 → 3 vCPUs"
    );
}

#[test]
fn a_windows_guest_grows_but_never_shrinks() {
    let p = Policy::default();
    let windows = VmFacts {
        vcpus: 4,
        memory_mib: 8192,
        windows: Some(true),
        ..facts()
    };
    let (d, _) = hold(
        &p,
        &windows,
        &util(0.12, 0.1),
        &node(),
        None,
        T0,
        T0 + 30 * MIN,
    );
    for (rd, what) in [(&d.cpu, "vCPUs"), (&d.memory, "memory")] {
        assert_eq!(
            rd.action,
            Action::Blocked(BlockedBy::GrowOnly),
            "{}",
            rd.reason
        );
        assert!(
            rd.reason
                .contains(&format!("blocked: Windows does not unplug {what}")),
            "{}",
            rd.reason
        );
    }
    // The same VM as Linux shrinks; a busy Windows VM grows.
    let linux = VmFacts {
        windows: Some(false),
        ..windows.clone()
    };
    let (d, _) = hold(
        &p,
        &linux,
        &util(0.12, 0.1),
        &node(),
        None,
        T0,
        T0 + 30 * MIN,
    );
    assert!(
        matches!(d.cpu.action, Action::Down { .. }),
        "{}",
        d.cpu.reason
    );
    let (d, _) = hold(
        &p,
        &windows,
        &util(0.95, 0.6),
        &node(),
        None,
        T0,
        T0 + 2 * MIN,
    );
    assert_eq!(
        d.cpu.action,
        Action::Up { from: 4, to: 8 },
        "{}",
        d.cpu.reason
    );
}

#[test]
fn thresholds_are_configurable() {
    let mut p = Policy::default();
    p.cpu.high = 95.0;
    p.cpu.low = 10.0;
    let (d, _) = once(&p, &facts(), &util(0.93, 0.6), None, T0);
    assert_eq!(d.cpu.reason, "cpu 93% within 10-95%: keep");
    let (d, s) = once(&p, &facts(), &util(0.12, 0.6), None, T0);
    assert_eq!(d.cpu.action, Action::Keep);
    assert_eq!(s.cpu.below_since, None, "12% is inside 10-95");
}

#[test]
fn breach_resets_when_back_inside_the_band() {
    let p = Policy::default();
    let (_, s) = once(&p, &facts(), &util(0.93, 0.6), None, T0);
    let (_, s) = once(&p, &facts(), &util(0.50, 0.6), Some(&s), T0 + MIN);
    assert_eq!(s.cpu.above_since, None);
    let (d, _) = once(&p, &facts(), &util(0.93, 0.6), Some(&s), T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Keep, "the breach started again at 2m");
    assert!(d.cpu.reason.contains("for 0s"), "{}", d.cpu.reason);
}

#[test]
fn breach_resets_on_missing_data() {
    let p = Policy::default();
    let (_, s) = once(&p, &facts(), &util(0.93, 0.6), None, T0);
    let missing = Utilisation {
        cpu: None,
        ..util(0.93, 0.6)
    };
    let (d, s) = once(&p, &facts(), &missing, Some(&s), T0 + MIN);
    assert_eq!(d.cpu.reason, "cpu: no data: keep");
    assert_eq!(s.cpu.above_since, None);
    let (d, _) = once(&p, &facts(), &util(0.93, 0.6), Some(&s), T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Keep);
}

#[test]
fn breach_resets_after_a_gap_longer_than_the_window() {
    let p = Policy::default(); // window 5m
    let (_, s) = once(&p, &facts(), &util(0.93, 0.6), None, T0);
    let (d, _) = once(&p, &facts(), &util(0.93, 0.6), Some(&s), T0 + 4 * MIN);
    assert!(
        d.cpu.is_change(),
        "a 4m gap is within the window: {}",
        d.cpu.reason
    );
    let (d, s) = once(&p, &facts(), &util(0.93, 0.6), Some(&s), T0 + 6 * MIN);
    assert_eq!(d.cpu.action, Action::Keep, "nobody watched for 6m");
    assert_eq!(s.cpu.above_since, Some(T0 + 6 * MIN));
}

// --- unknown data ----------------------------------------------------------------------------

#[test]
fn too_few_samples_is_no_data() {
    let p = Policy::default();
    let f = VmFacts {
        memory_mib: 8192,
        ..facts()
    };
    let u = Utilisation {
        memory_samples: 2,
        ..util(0.5, 0.1)
    };
    let (_, s) = hold(&p, &f, &util(0.5, 0.1), &node(), None, T0, T0 + 40 * MIN);
    assert!(s.memory.below_since.is_some());
    let (d, s) = once(&p, &f, &u, Some(&s), T0 + 41 * MIN);
    assert_eq!(d.memory.action, Action::Keep);
    assert_eq!(d.memory.reason, "memory: no data (2 samples, need 3): keep");
    assert_eq!(s.memory.below_since, None, "breach timer reset");
    assert_eq!(d.cpu.action, Action::Keep, "cpu has its own sample count");
    assert_eq!(d.cpu.reason, "cpu 50% within 25-80%: keep");
}

#[test]
fn out_of_range_is_no_data() {
    let p = Policy::default();
    for bad in [1.7, -0.1, f64::NAN, f64::INFINITY] {
        let (_, s) = once(&p, &facts(), &util(0.05, 0.6), None, T0);
        let (d, s) = once(&p, &facts(), &util(bad, 0.6), Some(&s), T0 + MIN);
        assert_eq!(d.cpu.action, Action::Keep);
        assert!(d.cpu.reason.contains("out of range"), "{}", d.cpu.reason);
        assert_eq!(s.cpu.below_since, None);
    }
    // Slightly above 1 is accounting noise: 100 %.
    let (d, _) = once(&p, &facts(), &util(1.2, 0.6), None, T0);
    assert!(
        d.cpu.reason.starts_with("cpu 100% > 80%"),
        "{}",
        d.cpu.reason
    );
}

#[test]
fn unknown_data_never_scales() {
    let p = Policy::default();
    let f = VmFacts {
        vcpus: 4,
        memory_mib: 8192,
        ..facts()
    };
    let (_, s) = hold(&p, &f, &util(0.05, 0.05), &node(), None, T0, T0 + 14 * MIN);
    let (d, _) = once(&p, &f, &Utilisation::unknown(), Some(&s), T0 + 60 * MIN);
    assert_eq!(d.cpu.action, Action::Keep);
    assert_eq!(d.memory.action, Action::Keep);
}

#[test]
fn memory_without_balloon_statistics_never_shrinks() {
    let p = Policy::default();
    let f = VmFacts {
        memory_mib: 8192,
        ..facts()
    };
    for source in [MemorySource::Host, MemorySource::Unknown] {
        let u = Utilisation {
            memory_source: source,
            ..util(0.5, 0.1)
        };
        let (d, s) = hold(&p, &f, &u, &node(), None, T0, T0 + 60 * MIN);
        assert_eq!(d.memory.action, Action::Keep);
        assert!(
            d.memory.reason.ends_with(": not scaling down"),
            "{}",
            d.memory.reason
        );
        assert_eq!(s.memory.below_since, None);
    }
    let u = Utilisation {
        memory_source: MemorySource::Host,
        ..util(0.5, 0.1)
    };
    let (d, _) = once(&p, &f, &u, None, T0);
    assert_eq!(
        d.memory.reason,
        "memory 10% < 40%, but the memory figure is a host-side estimate (no balloon statistics): not scaling down"
    );
    // Nor growing on it: the host-side figure follows every increase, so growth on it would
    // never end.
    let u = Utilisation {
        memory_source: MemorySource::Host,
        ..util(0.5, 0.95)
    };
    let (d, s) = hold(&p, &f, &u, &node(), None, T0, T0 + 10 * MIN);
    assert_eq!(d.memory.action, Action::Keep, "{}", d.memory.reason);
    assert!(
        d.memory.reason.ends_with(": not scaling up"),
        "{}",
        d.memory.reason
    );
    assert_eq!(s.memory.above_since, None);
    // The guest's own figure does grow it.
    let u = Utilisation {
        memory_source: MemorySource::Guest,
        ..util(0.5, 0.95)
    };
    let (d, _) = hold(&p, &f, &u, &node(), None, T0, T0 + MIN);
    assert!(
        matches!(d.memory.action, Action::Up { .. }),
        "{}",
        d.memory.reason
    );
}

// --- sizing ----------------------------------------------------------------------------------

#[test]
fn sizes_toward_the_target() {
    let mut p = Policy::default();
    p.cpu.max = 16;
    p.cpu.max_step_up = 16;
    let f = VmFacts {
        vcpus: 4,
        max_vcpus: Some(16),
        ..facts()
    };
    // in use 3.6; target 52.5 % (middle of 25-80) → 6.86 → 7.
    let (d, _) = hold(&p, &f, &util(0.9, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 4, to: 7 });
    p.cpu.target = Some(60.0);
    let (d, _) = hold(&p, &f, &util(0.9, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 4, to: 6 });
    // Down: in use 0.8 at 40 % target... 4 × 0.2 / 0.6 = 1.33 → 2.
    p.cpu.max_step_down = 8;
    let (d, _) = hold(&p, &f, &util(0.2, 0.6), &node(), None, T0, T0 + 15 * MIN);
    assert_eq!(d.cpu.action, Action::Down { from: 4, to: 2 });
}

#[test]
fn steps_bound_the_change() {
    let mut p = Policy::default();
    p.cpu.max_step_up = 2;
    let f = VmFacts {
        vcpus: 4,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(1.0, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(
        d.cpu.action,
        Action::Up { from: 4, to: 6 },
        "wanted 12 (saturated: × 3), step 2"
    );
    let (d, _) = hold(&p, &f, &util(0.05, 0.6), &node(), None, T0, T0 + 15 * MIN);
    assert_eq!(
        d.cpu.action,
        Action::Down { from: 4, to: 3 },
        "wanted 1, step 1"
    );
    // Memory: 4096 at 100 % wants 6554; step 1 GiB → 5120.
    let mut p = Policy::default();
    p.memory.max_step_up = 1024;
    let (d, _) = hold(&p, &facts(), &util(0.5, 1.0), &node(), None, T0, T0 + MIN);
    assert_eq!(
        d.memory.action,
        Action::Up {
            from: 4096,
            to: 5120
        }
    );
}

#[test]
fn min_and_max_bound_the_change() {
    let p = Policy::default(); // cpu 1..8
    let f = VmFacts {
        vcpus: 7,
        max_vcpus: Some(16),
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(1.0, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 7, to: 8 });
    let f = VmFacts {
        vcpus: 8,
        max_vcpus: Some(16),
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(1.0, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Blocked(BlockedBy::Limit));
    assert_eq!(
        d.cpu.reason,
        "cpu 100% > 80% for 2m (needs 2m), but already at the maximum 8 vCPUs (policy max): blocked"
    );
    let mut p = Policy::default();
    p.cpu.min = 2;
    let f = VmFacts {
        vcpus: 3,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(0.05, 0.6), &node(), None, T0, T0 + 15 * MIN);
    assert_eq!(d.cpu.action, Action::Down { from: 3, to: 2 });
    let f = VmFacts {
        vcpus: 2,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(0.05, 0.6), &node(), None, T0, T0 + 15 * MIN);
    assert_eq!(d.cpu.action, Action::Keep);
    assert!(
        d.cpu
            .reason
            .ends_with("but already at the minimum 2 vCPUs: keep"),
        "{}",
        d.cpu.reason
    );
    // Memory max 16 GiB.
    let f = VmFacts {
        memory_mib: 15360,
        ..facts()
    };
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.5, 1.0),
        &node(),
        None,
        T0,
        T0 + MIN,
    );
    assert_eq!(
        d.memory.action,
        Action::Up {
            from: 15360,
            to: 16384
        }
    );
}

#[test]
fn vcpus_stay_within_sockets_times_cores() {
    let p = Policy::default();
    let f = VmFacts {
        vcpus: 3,
        max_vcpus: Some(4),
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(1.0, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 3, to: 4 });
    let f = VmFacts {
        vcpus: 4,
        max_vcpus: Some(4),
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(1.0, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Blocked(BlockedBy::Envelope));
    assert!(
        d.cpu
            .reason
            .contains("already at sockets × cores = 4 vCPUs"),
        "{}",
        d.cpu.reason
    );
    // Unknown envelope: not bounding.
    let f = VmFacts {
        vcpus: 4,
        max_vcpus: None,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(1.0, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(
        d.cpu.action,
        Action::Up { from: 4, to: 8 },
        "saturated: × 3, step 4, policy max 8"
    );
}

#[test]
fn memory_up_lands_on_the_grid_rounded_up() {
    let p = Policy::default();
    // 4096 at 94 % (not saturated): 3850 in use / 62.5 % = 6160 → grid up 6656.
    let (d, _) = hold(&p, &facts(), &util(0.5, 0.94), &node(), None, T0, T0 + MIN);
    assert_eq!(
        d.memory.action,
        Action::Up {
            from: 4096,
            to: 6656
        }
    );
    assert_eq!(
        d.memory.reason,
        "memory 94% > 85% for 1m (needs 1m): 4096 → 6656 MiB"
    );
    // Above 17408 the grid steps by 1024: 17408 at 90 % → 25068 → step 4096 → 21504.
    let mut p = Policy::default();
    p.memory.max = 64 * 1024;
    let f = VmFacts {
        memory_mib: 17408,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(0.5, 0.9), &node(), None, T0, T0 + MIN);
    assert_eq!(
        d.memory.action,
        Action::Up {
            from: 17408,
            to: 21504
        }
    );
    // A step smaller than the grid spacing still moves by one DIMM.
    p.memory.max_step_up = 256;
    let (d, _) = hold(&p, &facts(), &util(0.5, 0.95), &node(), None, T0, T0 + MIN);
    assert_eq!(
        d.memory.action,
        Action::Up {
            from: 4096,
            to: 4608
        }
    );
    // A max off the grid is rounded down to it.
    let mut p = Policy::default();
    p.memory.max = 5000;
    let (d, _) = hold(&p, &facts(), &util(0.5, 0.95), &node(), None, T0, T0 + MIN);
    assert_eq!(
        d.memory.action,
        Action::Up {
            from: 4096,
            to: 4608
        }
    );
}

#[test]
fn memory_down_lands_on_the_grid_rounded_down() {
    let mut p = Policy::default();
    p.memory.max_step_down = 8192;
    // 8192 at 20 %: 1638 in use / 62.5 % = 2622 → grid down 2560 (margin needs 1884).
    let f = VmFacts {
        memory_mib: 8192,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(0.5, 0.2), &node(), None, T0, T0 + 30 * MIN);
    assert_eq!(
        d.memory.action,
        Action::Down {
            from: 8192,
            to: 2560
        }
    );
    // Default step 1 GiB.
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.5, 0.2),
        &node(),
        None,
        T0,
        T0 + 30 * MIN,
    );
    assert_eq!(
        d.memory.action,
        Action::Down {
            from: 8192,
            to: 7168
        }
    );
    assert_eq!(
        d.memory.reason,
        "memory 20% < 40% for 30m (needs 30m): 8192 → 7168 MiB"
    );
}

#[test]
fn memory_never_shrinks_below_use_plus_margin() {
    let mut p = Policy::default();
    p.memory.target = Some(90.0);
    p.memory.low = 50.0;
    p.memory.high = 95.0;
    p.memory.max_step_down = 8192;
    // 8192 at 35 %: 2867 in use; target 90 % → 3186 (grid down 3072), margin → 3298 → 3584.
    let f = VmFacts {
        memory_mib: 8192,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(0.5, 0.35), &node(), None, T0, T0 + 30 * MIN);
    assert_eq!(
        d.memory.action,
        Action::Down {
            from: 8192,
            to: 3584
        }
    );
    // When the margin leaves nothing to remove: keep, saying so.
    p.memory_margin = 150.0;
    let f = VmFacts {
        memory_mib: 4096,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(0.5, 0.39), &node(), None, T0, T0 + 30 * MIN);
    assert_eq!(d.memory.action, Action::Keep);
    assert!(
        d.memory.reason.contains("150% margin needs 4096 MiB: keep"),
        "{}",
        d.memory.reason
    );
}

#[test]
fn memory_stays_at_least_1024_with_hotplug() {
    let mut p = Policy::default();
    p.memory.min = 256;
    p.memory.max_step_down = 4096;
    let f = VmFacts {
        memory_mib: 1536,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(0.5, 0.05), &node(), None, T0, T0 + 30 * MIN);
    assert_eq!(
        d.memory.action,
        Action::Down {
            from: 1536,
            to: 1024
        }
    );
    let f = VmFacts {
        memory_mib: 1024,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(0.5, 0.05), &node(), None, T0, T0 + 30 * MIN);
    assert_eq!(d.memory.action, Action::Keep);
    assert!(
        d.memory
            .reason
            .ends_with("already at the minimum 1024 MiB: keep"),
        "{}",
        d.memory.reason
    );
}

#[test]
fn balloon_is_lowered_with_memory() {
    let f = VmFacts {
        memory_mib: 8192,
        balloon_mib: Some(8192),
        ..facts()
    };
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.5, 0.2),
        &node(),
        None,
        T0,
        T0 + 30 * MIN,
    );
    assert_eq!(
        d.memory.action,
        Action::Down {
            from: 8192,
            to: 7168
        }
    );
    assert_eq!(d.memory.balloon_mib, Some(7168));
    assert!(
        d.memory.reason.ends_with(", balloon 8192 → 7168 MiB"),
        "{}",
        d.memory.reason
    );
    for balloon in [Some(0), Some(2048), None] {
        let f = VmFacts {
            memory_mib: 8192,
            balloon_mib: balloon,
            ..facts()
        };
        let (d, _) = hold(
            &Policy::default(),
            &f,
            &util(0.5, 0.2),
            &node(),
            None,
            T0,
            T0 + 30 * MIN,
        );
        assert_eq!(d.memory.balloon_mib, None, "{balloon:?}");
    }
}

// --- envelope --------------------------------------------------------------------------------

#[test]
fn no_cpu_hotplug_is_blocked_with_the_fix() {
    let f = VmFacts {
        cpu_hotplug: Some(false),
        memory_hotplug: Some(false),
        ..facts()
    };
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.95, 0.6),
        &node(),
        None,
        T0,
        T0 + 2 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Blocked(BlockedBy::NotLiveScalable));
    assert!(
        d.cpu
            .reason
            .ends_with("but cpu hotplug is off: qm set 101 --hotplug network,disk,usb,cpu"),
        "{}",
        d.cpu.reason
    );
    let f = VmFacts {
        vcpus: 4,
        cpu_hotplug: Some(false),
        ..facts()
    };
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.05, 0.6),
        &node(),
        None,
        T0,
        T0 + 15 * MIN,
    );
    assert_eq!(
        d.cpu.action,
        Action::Blocked(BlockedBy::NotLiveScalable),
        "down too"
    );
    // The fix keeps memory hotplug where it is on.
    let f = VmFacts {
        cpu_hotplug: Some(false),
        ..facts()
    };
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.95, 0.6),
        &node(),
        None,
        T0,
        T0 + 2 * MIN,
    );
    assert!(
        d.cpu
            .reason
            .ends_with("--hotplug network,disk,usb,cpu,memory"),
        "{}",
        d.cpu.reason
    );
}

#[test]
fn memory_needs_hotplug_and_numa() {
    let f = VmFacts {
        memory_hotplug: Some(false),
        numa: Some(false),
        ..facts()
    };
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.5, 0.95),
        &node(),
        None,
        T0,
        T0 + MIN,
    );
    assert_eq!(d.memory.action, Action::Blocked(BlockedBy::NotLiveScalable));
    assert!(
        d.memory.reason.ends_with(
            "but memory hotplug is off: qm set 101 --hotplug network,disk,usb,cpu,memory --numa 1 (then a cold restart)"
        ),
        "{}",
        d.memory.reason
    );
    let f = VmFacts {
        numa: Some(false),
        ..facts()
    };
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.5, 0.95),
        &node(),
        None,
        T0,
        T0 + MIN,
    );
    assert_eq!(d.memory.action, Action::Blocked(BlockedBy::NotLiveScalable));
    assert!(
        d.memory
            .reason
            .ends_with("but memory hotplug needs numa: qm set 101 --numa 1 (then a cold restart)"),
        "{}",
        d.memory.reason
    );
}

#[test]
fn unknown_envelope_neither_blocks_nor_bounds_and_the_second_call_decides() {
    let mut p = Policy::default();
    p.cpu.max_step_up = 2;
    let phase1 = VmFacts::new(101, "pve1", 2, 4096);
    let (d1, s1) = hold(
        &p,
        &phase1,
        &util(1.0, 0.6),
        &node(),
        None,
        T0,
        T0 + 2 * MIN,
    );
    assert_eq!(d1.cpu.action, Action::Up { from: 2, to: 4 });
    let prev = hold(&p, &phase1, &util(1.0, 0.6), &node(), None, T0, T0 + MIN).1;
    let phase2 = VmFacts {
        max_vcpus: Some(3),
        ..facts()
    };
    let (d2, s2) = once(&p, &phase2, &util(1.0, 0.6), Some(&prev), T0 + 2 * MIN);
    assert_eq!(d2.cpu.action, Action::Up { from: 2, to: 3 });
    assert_eq!(s1, s2, "both calls leave the same state");
    let phase2 = VmFacts {
        cpu_hotplug: Some(false),
        ..facts()
    };
    let (d2, _) = once(&p, &phase2, &util(1.0, 0.6), Some(&prev), T0 + 2 * MIN);
    assert_eq!(d2.cpu.action, Action::Blocked(BlockedBy::NotLiveScalable));
}

// --- host guard ------------------------------------------------------------------------------

#[test]
fn host_guard_blocks_memory_up_beyond_max_memory() {
    let n = NodeHeadroom {
        name: "pve2".into(),
        mem_used_mib: Some(118_000),
        mem_total_mib: Some(131_072),
        cpu: Some(0.2),
    };
    let (d, _) = hold(
        &Policy::default(),
        &facts(),
        &util(0.5, 0.91),
        &n,
        None,
        T0,
        T0 + MIN,
    );
    assert_eq!(d.memory.action, Action::Blocked(BlockedBy::HostGuard));
    assert_eq!(
        d.memory.reason,
        "memory 91% > 85% for 1m (needs 1m), but node pve2 would reach 92% memory with +2048 MiB (max 90%): blocked"
    );
    // With room, it goes.
    let (d, _) = hold(
        &Policy::default(),
        &facts(),
        &util(0.5, 0.91),
        &node(),
        None,
        T0,
        T0 + MIN,
    );
    assert_eq!(
        d.memory.action,
        Action::Up {
            from: 4096,
            to: 6144
        }
    );
}

#[test]
fn host_guard_blocks_any_up_on_a_busy_node() {
    let n = NodeHeadroom {
        cpu: Some(0.95),
        ..node()
    };
    let (d, _) = hold(
        &Policy::default(),
        &facts(),
        &util(0.95, 0.95),
        &n,
        None,
        T0,
        T0 + 2 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Blocked(BlockedBy::HostGuard));
    assert!(
        d.cpu
            .reason
            .ends_with("but node pve1 cpu is at 95% (max 90%): blocked"),
        "{}",
        d.cpu.reason
    );
    assert_eq!(d.memory.action, Action::Blocked(BlockedBy::HostGuard));
}

#[test]
fn host_guard_never_blocks_a_scale_down() {
    let n = NodeHeadroom {
        name: "pve1".into(),
        mem_used_mib: Some(131_000),
        mem_total_mib: Some(131_072),
        cpu: Some(1.0),
    };
    let f = VmFacts {
        vcpus: 4,
        memory_mib: 8192,
        ..facts()
    };
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.05, 0.2),
        &n,
        None,
        T0,
        T0 + 30 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Down { from: 4, to: 3 });
    assert_eq!(
        d.memory.action,
        Action::Down {
            from: 8192,
            to: 7168
        }
    );
    let (d, _) = hold(
        &Policy::default(),
        &f,
        &util(0.05, 0.2),
        &NodeHeadroom::unknown("pve1"),
        None,
        T0,
        T0 + 30 * MIN,
    );
    assert!(d.cpu.is_change() && d.memory.is_change());
}

#[test]
fn host_guard_blocks_when_node_figures_are_unknown_unless_off() {
    let n = NodeHeadroom::unknown("pve1");
    let (d, _) = hold(
        &Policy::default(),
        &facts(),
        &util(0.95, 0.95),
        &n,
        None,
        T0,
        T0 + 2 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Blocked(BlockedBy::HostGuard));
    assert!(
        d.cpu.reason.contains("node pve1's cpu load is unknown"),
        "{}",
        d.cpu.reason
    );
    let n = NodeHeadroom {
        cpu: Some(0.1),
        ..NodeHeadroom::unknown("pve1")
    };
    let (d, _) = hold(
        &Policy::default(),
        &facts(),
        &util(0.95, 0.95),
        &n,
        None,
        T0,
        T0 + 2 * MIN,
    );
    assert!(d.cpu.is_change());
    assert_eq!(d.memory.action, Action::Blocked(BlockedBy::HostGuard));
    assert!(
        d.memory
            .reason
            .contains("node pve1's memory use is unknown"),
        "{}",
        d.memory.reason
    );
    let mut p = Policy::default();
    p.host.max_cpu = 100.0;
    p.host.max_memory = 100.0;
    let n = NodeHeadroom::unknown("pve1");
    let (d, _) = hold(&p, &facts(), &util(0.95, 0.95), &n, None, T0, T0 + 2 * MIN);
    assert!(d.cpu.is_change() && d.memory.is_change(), "guard off");
}

#[test]
fn reserving_memory_guards_the_next_vm() {
    let mut n = NodeHeadroom {
        mem_used_mib: Some(115_000),
        ..node()
    };
    let (d, _) = hold(
        &Policy::default(),
        &facts(),
        &util(0.5, 0.91),
        &n,
        None,
        T0,
        T0 + MIN,
    );
    let Some((from, to)) = d.memory.change() else {
        panic!("{}", d.memory.reason)
    };
    n.reserve_memory(to - from);
    let (d, _) = hold(
        &Policy::default(),
        &facts(),
        &util(0.5, 0.91),
        &n,
        None,
        T0,
        T0 + MIN,
    );
    assert_eq!(d.memory.action, Action::Blocked(BlockedBy::HostGuard));
}

// --- cooldowns and back-off ------------------------------------------------------------------

#[test]
fn cooldown_up_after_any_change() {
    let mut p = Policy::default(); // cooldown_up 3m
    p.cpu.up_after = Duration::from_secs(60);
    p.cpu.max_step_up = 2;
    let (d, mut s) = hold(&p, &facts(), &util(1.0, 0.6), &node(), None, T0, T0 + MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 2, to: 4 });
    s.record_change(Resource::Cpu, Direction::Up, 2, 4, T0 + MIN);
    let f = VmFacts {
        vcpus: 4,
        ..facts()
    };
    let (d, s) = hold(
        &p,
        &f,
        &util(1.0, 0.6),
        &node(),
        Some(s),
        T0 + 2 * MIN,
        T0 + 3 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Keep);
    assert_eq!(
        d.cpu.reason,
        "cpu 100% > 80% for 1m (needs 1m), but cpu cooldown: 1m left after the last change: waiting"
    );
    let (d, _) = once(&p, &f, &util(1.0, 0.6), Some(&s), T0 + 4 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 4, to: 6 });
}

#[test]
fn scale_down_waits_cooldown_down_after_a_scale_up() {
    let mut p = Policy::default();
    p.cpu.down_after = Duration::from_secs(60);
    let mut s = VmState::default();
    s.record_change(Resource::Cpu, Direction::Up, 2, 4, T0);
    let f = VmFacts {
        vcpus: 4,
        ..facts()
    };
    let (d, s) = hold(
        &p,
        &f,
        &util(0.05, 0.6),
        &node(),
        Some(s),
        T0 + MIN,
        T0 + 10 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Keep);
    assert!(
        d.cpu
            .reason
            .ends_with("cpu cooldown: 5m left after the last change: waiting"),
        "{}",
        d.cpu.reason
    );
    let (d, _) = hold(
        &p,
        &f,
        &util(0.05, 0.6),
        &node(),
        Some(s),
        T0 + 11 * MIN,
        T0 + 15 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Down { from: 4, to: 3 });
}

#[test]
fn cooldowns_are_per_resource() {
    let mut s = VmState::default();
    s.record_change(Resource::Memory, Direction::Up, 2048, 4096, T0);
    let (d, _) = hold(
        &Policy::default(),
        &facts(),
        &util(1.0, 0.6),
        &node(),
        Some(s),
        T0 + MIN,
        T0 + 3 * MIN,
    );
    assert!(d.cpu.is_change(), "{}", d.cpu.reason);
}

#[test]
fn refused_change_backs_off_in_that_direction() {
    let p = Policy::default();
    let f = VmFacts {
        vcpus: 4,
        ..facts()
    };
    let mut s = VmState::default();
    s.record_refusal(
        Resource::Cpu,
        Direction::Down,
        T0,
        p.backoff,
        f.signature(),
        "hotplug problem - error unplug cpu\nmore",
    );
    let (d, s) = hold(
        &p,
        &f,
        &util(0.05, 0.6),
        &node(),
        Some(s),
        T0 + MIN,
        T0 + 20 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Blocked(BlockedBy::Backoff));
    assert!(
        d.cpu.reason.ends_with(
            "but the last scale-down was refused (hotplug problem - error unplug cpu): backing off, 40m left or until the config changes"
        ),
        "{}",
        d.cpu.reason
    );
    // Not in the other direction.
    let (d, _) = hold(
        &p,
        &f,
        &util(1.0, 0.6),
        &node(),
        Some(s.clone()),
        T0 + 21 * MIN,
        T0 + 23 * MIN,
    );
    assert!(
        matches!(d.cpu.action, Action::Up { .. }),
        "{}",
        d.cpu.reason
    );
    // Until the back-off ends.
    let (d, s2) = hold(
        &p,
        &f,
        &util(0.05, 0.6),
        &node(),
        Some(s.clone()),
        T0 + 21 * MIN,
        T0 + 60 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Down { from: 4, to: 3 });
    assert!(s2.cpu.backoff_down.is_none(), "expired back-off dropped");
}

#[test]
fn backoff_ends_when_the_config_changes() {
    let p = Policy::default();
    let f = VmFacts {
        vcpus: 4,
        ..facts()
    };
    let mut s = VmState::default();
    s.record_refusal(
        Resource::Cpu,
        Direction::Down,
        T0,
        p.backoff,
        f.signature(),
        "refused",
    );
    let (_, s) = hold(
        &p,
        &f,
        &util(0.05, 0.6),
        &node(),
        Some(s),
        T0 + MIN,
        T0 + 15 * MIN,
    );
    // Someone edited the config (new digest): try again.
    let edited = VmFacts {
        digest: Some("d2".into()),
        ..f.clone()
    };
    let (d, s2) = once(&p, &edited, &util(0.05, 0.6), Some(&s), T0 + 16 * MIN);
    assert_eq!(d.cpu.action, Action::Down { from: 4, to: 3 });
    assert!(s2.cpu.backoff_down.is_none());
    // Before the config is read (digest unknown) the back-off cannot be confirmed: the first
    // call does not block, so that the run reads the config; the second call blocks.
    let phase1 = VmFacts {
        digest: None,
        ..f.clone()
    };
    let (d, s1) = once(&p, &phase1, &util(0.05, 0.6), Some(&s), T0 + 16 * MIN);
    assert_eq!(d.cpu.action, Action::Down { from: 4, to: 3 });
    assert!(s1.cpu.backoff_down.is_some(), "kept");
    let (d, _) = once(&p, &f, &util(0.05, 0.6), Some(&s), T0 + 16 * MIN);
    assert_eq!(d.cpu.action, Action::Blocked(BlockedBy::Backoff));
    // A back-off without digest (after a change of ours) blocks in both calls.
    let mut s3 = s.clone();
    s3.record_change(Resource::Memory, Direction::Up, 4096, 4608, T0 + 16 * MIN);
    let grown = VmFacts {
        memory_mib: 4608,
        ..phase1
    };
    let (d, _) = once(&p, &grown, &util(0.05, 0.6), Some(&s3), T0 + 16 * MIN);
    assert_eq!(d.cpu.action, Action::Blocked(BlockedBy::Backoff));
    // Different sizes: try again.
    let resized = VmFacts { vcpus: 5, ..f };
    let (d, _) = once(&p, &resized, &util(0.05, 0.6), Some(&s), T0 + 16 * MIN);
    assert_eq!(d.cpu.action, Action::Down { from: 5, to: 4 });
}

// --- skips and switches ----------------------------------------------------------------------

#[test]
fn vms_not_running_or_locked_are_skipped_with_their_state_kept() {
    let p = Policy::default();
    let (_, s) = hold(&p, &facts(), &util(0.95, 0.6), &node(), None, T0, T0 + MIN);
    let cases: Vec<(VmFacts, &str)> = vec![
        (
            VmFacts {
                status: VmStatus::Stopped,
                ..facts()
            },
            "VM is stopped: skipped",
        ),
        (
            VmFacts {
                status: VmStatus::Paused,
                ..facts()
            },
            "VM is paused: skipped",
        ),
        (
            VmFacts {
                status: VmStatus::Unknown,
                ..facts()
            },
            "VM status is unknown: skipped",
        ),
        (
            VmFacts {
                template: true,
                ..facts()
            },
            "VM is a template: skipped",
        ),
        (
            VmFacts {
                lock: Some("backup".into()),
                ..facts()
            },
            "VM is locked (backup): skipped",
        ),
        (
            VmFacts {
                pending: Some(vec!["vcpus: 2 → 4".into()]),
                ..facts()
            },
            "VM config has pending changes (vcpus: 2 → 4) that are not pvescale's; apply or revert them: skipped",
        ),
    ];
    for (f, reason) in cases {
        let (d, s2) = once(&p, &f, &util(0.95, 0.95), Some(&s), T0 + 2 * MIN);
        assert_eq!(d.cpu.action, Action::Skip);
        assert_eq!(d.memory.action, Action::Skip);
        assert_eq!(d.cpu.reason, reason);
        assert!(!d.has_change());
        let expected = VmState {
            last_seen: T0 + 2 * MIN,
            ..s.clone()
        };
        assert_eq!(s2, expected, "state kept");
    }
}

#[test]
fn disabled_resource_is_skipped_with_its_state_kept() {
    let mut p = Policy::default();
    let (_, s) = hold(&p, &facts(), &util(0.95, 0.95), &node(), None, T0, T0 + MIN);
    p.cpu.enabled = false;
    let (d, s2) = hold(
        &p,
        &facts(),
        &util(0.95, 0.95),
        &node(),
        Some(s.clone()),
        T0 + 2 * MIN,
        T0 + 5 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Skip);
    assert_eq!(d.cpu.reason, "cpu: not managed (enabled = false): skipped");
    assert_eq!(s2.cpu, s.cpu);
    assert!(d.memory.is_change(), "memory still managed");
}

#[test]
fn scale_up_and_down_switches() {
    let mut p = Policy::default();
    p.cpu.scale_up = false;
    let (d, _) = hold(
        &p,
        &facts(),
        &util(1.0, 0.6),
        &node(),
        None,
        T0,
        T0 + 10 * MIN,
    );
    assert_eq!(d.cpu.action, Action::Keep);
    assert!(
        d.cpu
            .reason
            .ends_with("but scaling up is off (scale_up = false): keep"),
        "{}",
        d.cpu.reason
    );
    let mut p = Policy::default();
    p.cpu.scale_down = false;
    let f = VmFacts {
        vcpus: 4,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(0.05, 0.6), &node(), None, T0, T0 + 30 * MIN);
    assert_eq!(d.cpu.action, Action::Keep);
    assert!(
        d.cpu
            .reason
            .ends_with("but scaling down is off (scale_down = false): keep"),
        "{}",
        d.cpu.reason
    );
}

#[test]
fn decide_is_deterministic() {
    let p = Policy::default();
    let (_, s) = hold(&p, &facts(), &util(0.95, 0.95), &node(), None, T0, T0 + MIN);
    let a = once(&p, &facts(), &util(0.95, 0.95), Some(&s), T0 + 2 * MIN);
    let b = once(&p, &facts(), &util(0.95, 0.95), Some(&s), T0 + 2 * MIN);
    assert_eq!(a, b);
}

// --- formatting ------------------------------------------------------------------------------

#[test]
fn durations_and_percentages_read_well() {
    assert_eq!(fmt_duration(0), "0s");
    assert_eq!(fmt_duration(59), "59s");
    assert_eq!(fmt_duration(61), "1m");
    assert_eq!(fmt_duration(3600), "1h");
    assert_eq!(fmt_duration(3900), "1h5m");
    assert_eq!(fmt_left(61), "2m");
    assert_eq!(fmt_left(30), "30s");
    assert_eq!(pct_against(80.4, 80.0), "80.4%");
    assert_eq!(pct_against(93.2, 80.0), "93%");
    assert_eq!(num(80.5), "80.5");
    assert_eq!(Action::Up { from: 2, to: 4 }.to_string(), "up 2 → 4");
    assert_eq!(
        Action::Blocked(BlockedBy::HostGuard).to_string(),
        "blocked (host guard)"
    );
}

// --- breaches measured on the samples' own timestamps -----------------------------------------

/// A CPU utilisation whose samples (every 10 s, fraction of the size) are `f(t)` for
/// `t` in `(from, to]`, as a run at `to` reads them; the window figure is their mean.
fn sampled(from: u64, to: u64, f: impl Fn(u64) -> f64) -> Utilisation {
    let mut points = Vec::new();
    let mut t = from + 10;
    while t <= to {
        let sample = f(t);
        let recent: Vec<f64> = (0..6)
            .map(|k| t.saturating_sub(k * 10))
            .filter(|s| *s > from)
            .map(&f)
            .collect();
        let short = recent.iter().sum::<f64>() / recent.len() as f64;
        points.push(ViewPoint { t, sample, short });
        t += 10;
    }
    let mean = points.iter().map(|p| p.sample).sum::<f64>() / points.len().max(1) as f64;
    Utilisation {
        cpu: Some(mean),
        memory: Some(0.6),
        memory_source: MemorySource::Guest,
        cpu_samples: points.len() as u32,
        memory_samples: 30,
        cpu_view: SampleView {
            points,
            step_secs: 10,
        },
        ..Utilisation::unknown()
    }
}

#[test]
fn a_run_that_starts_mid_breach_acts_on_the_breach_the_samples_show() {
    let p = Policy::default(); // up_after 2m
    // Saturated since T0; the first run ever, at T0 + 2m, sees it all.
    let u = sampled(
        T0 - 5 * MIN,
        T0 + 2 * MIN,
        |t| if t > T0 { 1.0 } else { 0.5 },
    );
    let (d, s) = once(&p, &facts(), &u, None, T0 + 2 * MIN);
    assert_eq!(
        d.cpu.action,
        Action::Up { from: 2, to: 6 },
        "{}",
        d.cpu.reason
    );
    assert_eq!(
        s.cpu.above_since,
        Some(T0),
        "from the first sample above, less its 10 s"
    );
    // A minute earlier it was only 1 minute: waiting.
    let u = sampled(T0 - 5 * MIN, T0 + MIN, |t| if t > T0 { 1.0 } else { 0.5 });
    let (d, _) = once(&p, &facts(), &u, None, T0 + MIN);
    assert_eq!(d.cpu.action, Action::Keep, "{}", d.cpu.reason);
}

#[test]
fn runs_far_apart_lose_nothing_while_the_samples_are_continuous() {
    let mut p = Policy {
        window: Duration::from_secs(60),
        ..Policy::default()
    };
    p.cpu.up_after = Duration::from_secs(5 * MIN);
    let busy = |t: u64| if t > T0 { 1.0 } else { 0.5 };
    // Runs 121 s apart (the legacy gap limit was max(window, 120 s)): the samples in between
    // are read, so the breach goes on.
    let mut state = None;
    let mut last = T0 - 5 * MIN;
    let mut acted = None;
    for now in [T0 + 121, T0 + 242, T0 + 363] {
        let u = sampled(last.min(now - 60), now, busy);
        let (d, s) = once(&p, &facts(), &u, state.as_ref(), now);
        if d.cpu.is_change() {
            acted = Some(now);
        }
        state = Some(s);
        last = now;
    }
    assert_eq!(
        acted,
        Some(T0 + 363),
        "5 minutes of samples: acts at the run after"
    );
}

#[test]
fn one_low_sample_does_not_end_a_breach_but_a_gap_in_the_samples_does() {
    let p = Policy::default();
    // One 10 s dip at T0 + 60: the short view stays above 80 %.
    let u = sampled(T0 - MIN, T0 + 2 * MIN, |t| {
        if t == T0 + 60 {
            0.1
        } else if t > T0 {
            1.0
        } else {
            0.5
        }
    });
    let (d, _) = once(&p, &facts(), &u, None, T0 + 2 * MIN);
    assert!(d.cpu.is_change(), "{}", d.cpu.reason);
    // No sample for 2 minutes in the middle: nobody saw those minutes.
    let mut u = sampled(T0 - MIN, T0 + 4 * MIN, |t| if t > T0 { 1.0 } else { 0.5 });
    u.cpu_view
        .points
        .retain(|p| p.t <= T0 + MIN || p.t > T0 + 3 * MIN);
    let (d, s) = once(&p, &facts(), &u, None, T0 + 4 * MIN);
    assert_eq!(d.cpu.action, Action::Keep, "{}", d.cpu.reason);
    assert_eq!(
        s.cpu.above_since,
        Some(T0 + 3 * MIN),
        "restarted after the gap"
    );
}

#[test]
fn a_spike_shorter_than_up_after_changes_nothing_and_ends_a_scale_down_breach() {
    let mut p = Policy::default();
    p.cpu.down_after = Duration::from_secs(10 * MIN);
    // Idle, with a 1-minute spike to 100 % at T0 + 5m.
    let f = |t: u64| {
        if t > T0 + 5 * MIN && t <= T0 + 6 * MIN {
            1.0
        } else {
            0.1
        }
    };
    let mut state = None;
    for minute in 1..=12 {
        let now = T0 + minute * MIN;
        let u = sampled(now - 5 * MIN, now, f);
        let (d, s) = once(&p, &facts(), &u, state.as_ref(), now);
        assert!(!d.cpu.is_change(), "minute {minute}: {}", d.cpu.reason);
        state = Some(s);
    }
    let s = state.expect("state");
    assert!(
        s.cpu.below_since.is_some_and(|t| t > T0 + 6 * MIN),
        "the spike restarted the scale-down breach: {:?}",
        s.cpu.below_since
    );
}

#[test]
fn a_saturated_resource_steps_up_by_its_factor_within_the_bounds() {
    let mut p = Policy::default();
    let f = VmFacts {
        vcpus: 2,
        ..facts()
    };
    let (d, _) = hold(&p, &f, &util(1.0, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 2, to: 6 }, "× 3");
    // Below SATURATED: toward the target (0.9 × 2 / 0.525 = 3.4 → 4).
    let (d, _) = hold(&p, &f, &util(0.9, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 2, to: 4 });
    // Bounded by max_step_up and max.
    p.cpu.max_step_up = 1;
    let (d, _) = hold(&p, &f, &util(1.0, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 2, to: 3 });
    p.cpu.max_step_up = 8;
    p.cpu.max = 5;
    let (d, _) = hold(&p, &f, &util(1.0, 0.6), &node(), None, T0, T0 + 2 * MIN);
    assert_eq!(d.cpu.action, Action::Up { from: 2, to: 5 });
    // Memory pinned at its size with the guest's own figure: × 1.5 (4096 → 6144).
    let p = Policy::default();
    let (d, _) = hold(&p, &facts(), &util(0.5, 0.99), &node(), None, T0, T0 + MIN);
    assert_eq!(
        d.memory.action,
        Action::Up {
            from: 4096,
            to: 6144
        }
    );
}

#[test]
fn an_old_sample_alone_neither_starts_nor_holds_a_breach() {
    let p = Policy::default(); // up_after 2m
    // Saturated until T0, then no sample at all: the views end at T0.
    let u = sampled(T0 - 5 * MIN, T0, |_| 1.0);
    let (d, s) = once(&p, &facts(), &u, None, T0);
    assert!(s.cpu.above_since.is_some(), "{}", d.cpu.reason);
    // Ten minutes on, the same newest sample (the run saw it) is all there is.
    let (d, s) = once(&p, &facts(), &u, Some(&s), T0 + 10 * MIN);
    assert_eq!(d.cpu.action, Action::Keep);
    assert_eq!(d.cpu.reason, "cpu: no sample for 10m: keep");
    assert_eq!(s.cpu.above_since, None);
}

// --- a guest that left added vCPUs offline (issue 17.2) ---------------------------------------

/// A VM grown from 2 to 4 vCPUs at T0, watched, with `vcpus` now.
fn watched(vcpus: u32) -> (VmFacts, VmState) {
    let mut state = VmState::default();
    state.record_change(Resource::Cpu, Direction::Up, 2, 4, T0);
    state.cpu.online_watch = onlining::watch_for(2, 4, Some(1.0));
    (VmFacts { vcpus, ..facts() }, state)
}

#[test]
fn a_grow_read_pinned_at_the_old_size_is_taken_back_and_blocked() {
    let p = Policy::default();
    let (f, s) = watched(4);
    // 2 of 4 busy, flat, for 6 minutes after the grow.
    let u = sampled(T0, T0 + 6 * MIN, |_| 0.5);
    let (d, s) = once(&p, &f, &u, Some(&s), T0 + 6 * MIN);
    assert_eq!(
        d.cpu.action,
        Action::Down { from: 4, to: 2 },
        "{}",
        d.cpu.reason
    );
    assert!(
        d.cpu
            .reason
            .contains("the guest did not bring the added vCPUs online")
            && d.cpu.reason.contains("udev rule"),
        "{}",
        d.cpu.reason
    );
    let block = s.cpu.backoff_up.as_ref().expect("scale-up blocked");
    assert_eq!(block.until, T0 + 6 * MIN + onlining::OFFLINE_BLOCK_SECS);
    assert_eq!(s.cpu.online_watch, None);
    // Taken back to 2, still saturated: the block holds, with the fix in its reason.
    let mut after = s.clone();
    after.record_change(Resource::Cpu, Direction::Down, 4, 2, T0 + 6 * MIN);
    let busy = sampled(T0 + 7 * MIN, T0 + 12 * MIN, |_| 1.0);
    let (d, _) = once(
        &p,
        &VmFacts {
            vcpus: 2,
            ..facts()
        },
        &busy,
        Some(&after),
        T0 + 12 * MIN,
    );
    assert_eq!(
        d.cpu.action,
        Action::Blocked(BlockedBy::Backoff),
        "{}",
        d.cpu.reason
    );
    assert!(d.cpu.reason.contains("udev rule"), "{}", d.cpu.reason);
}

#[test]
fn a_grow_the_guest_uses_or_a_short_flat_stretch_is_not_taken_back() {
    let p = Policy::default();
    let (f, s) = watched(4);
    // Uses 3 of 4: the added vCPUs are online.
    let u = sampled(T0, T0 + 6 * MIN, |_| 0.75);
    let (d, s2) = once(&p, &f, &u, Some(&s), T0 + 6 * MIN);
    assert!(!d.cpu.is_change(), "{}", d.cpu.reason);
    assert_eq!(s2.cpu.online_watch, None, "nothing more to watch");
    // Pinned, but only for 3 minutes so far: wait.
    let u = sampled(T0, T0 + 3 * MIN, |_| 0.5);
    let (d, s3) = once(&p, &f, &u, Some(&s), T0 + 3 * MIN);
    assert!(!d.cpu.is_change(), "{}", d.cpu.reason);
    assert!(s3.cpu.online_watch.is_some(), "still watching");
    // Changed by someone else since: the watch ends.
    let (f6, _) = watched(6);
    let (d, s4) = once(
        &p,
        &f6,
        &sampled(T0, T0 + 6 * MIN, |_| 0.5),
        Some(&s),
        T0 + 6 * MIN,
    );
    assert!(
        !matches!(d.cpu.action, Action::Down { to: 2, .. }),
        "{}",
        d.cpu.reason
    );
    assert_eq!(s4.cpu.online_watch, None);
    // A VM that was not saturated before the grow is not watched.
    assert_eq!(onlining::watch_for(2, 4, Some(0.85)), None);
}
