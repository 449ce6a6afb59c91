//! Property tests of the decision engine: arbitrary utilisation sequences and clocks, the state
//! fed forward from minute to minute, and every change applied as if it succeeded (or, now and
//! then, refused by the VM).

use std::collections::HashMap;
use std::time::Duration;

use crate::common::proptest_config;
use proptest::prelude::*;
use pvescale::dimm;
use pvescale::policy::{
    Action, Direction, MemorySource, NodeHeadroom, Policy, Resource, Utilisation, VmFacts,
    WindowEffect, WindowInForce, decide,
};
use pvescale::state::VmState;

const T0: u64 = 1_700_000_000;

fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

/// A valid policy around the defaults.
fn policy() -> impl Strategy<Value = Policy> {
    let thresholds = (5.0..60.0f64, 10.0..40.0f64, prop::option::of(0.05..0.95f64));
    let sizes = (1u64..4, 0u64..12, 1u64..4, 1u64..3);
    let times = (0u64..6, 0u64..31, 0u64..10, 0u64..40);
    let mem = (
        prop::sample::select(vec![256u64, 1024, 2048]),
        prop::sample::select(vec![4096u64, 8192, 16384, 65536]),
        prop::sample::select(vec![256u64, 512, 1024, 4096, 8192]),
        prop::sample::select(vec![256u64, 512, 1024, 3000]),
        0.0..50.0f64,
    );
    (
        thresholds.clone(),
        thresholds,
        sizes,
        times.clone(),
        times,
        mem,
        1u32..5,
        10u64..120,
    )
        .prop_map(
            |(ct, mt, cs, cpu_times, mem_times, ms, min_samples, backoff)| {
                let mut p = Policy::default();
                for (rp, (low, gap, target)) in [(&mut p.cpu, ct), (&mut p.memory, mt)] {
                    rp.low = low;
                    rp.high = (low + gap).min(99.0);
                    rp.target = target.map(|t| rp.low + (rp.high - rp.low) * t);
                }
                let (min, extra, up, down) = cs;
                p.cpu.min = min;
                p.cpu.max = min + extra;
                p.cpu.max_step_up = up;
                p.cpu.max_step_down = down;
                for (rp, (ua, da, cu, cd)) in [(&mut p.cpu, cpu_times), (&mut p.memory, mem_times)]
                {
                    rp.up_after = minutes(ua);
                    rp.down_after = minutes(da);
                    rp.cooldown_up = minutes(cu);
                    rp.cooldown_down = minutes(cd);
                }
                let (mmin, mmax, mup, mdown, margin) = ms;
                p.memory.min = mmin;
                p.memory.max = mmax;
                p.memory.max_step_up = mup;
                p.memory.max_step_down = mdown;
                p.memory_margin = margin;
                p.min_samples = min_samples;
                p.backoff = minutes(backoff);
                p
            },
        )
}

/// One simulated run: time since the previous one, figures, node.
#[derive(Debug, Clone)]
struct Tick {
    dt: u64,
    cpu: Option<f64>,
    memory: Option<f64>,
    source: MemorySource,
    cpu_samples: u32,
    memory_samples: u32,
    node_cpu: Option<f64>,
    node_used: Option<u64>,
    refuse: bool,
    edit: bool,
}

impl Tick {
    fn utilisation(&self) -> Utilisation {
        Utilisation {
            cpu: self.cpu,
            memory: self.memory,
            memory_source: self.source,
            cpu_samples: self.cpu_samples,
            memory_samples: self.memory_samples,
            ..Utilisation::unknown()
        }
    }

    fn node(&self) -> NodeHeadroom {
        NodeHeadroom {
            name: "pve1".into(),
            mem_used_mib: self.node_used,
            mem_total_mib: Some(131_072),
            cpu: self.node_cpu,
        }
    }
}

fn figure() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(f64::NAN)),
        1 => (1.0..2.0f64).prop_map(Some),
        12 => (0.0..1.0f64).prop_map(Some),
    ]
}

fn tick() -> impl Strategy<Value = Tick> {
    (
        prop_oneof![8 => Just(60u64), 1 => Just(30), 1 => Just(120), 1 => 0u64..1800],
        figure(),
        figure(),
        prop::sample::select(vec![
            MemorySource::Guest,
            MemorySource::Guest,
            MemorySource::Host,
            MemorySource::Unknown,
        ]),
        0u32..12,
        0u32..12,
        prop::option::weighted(0.9, 0.0..1.0f64),
        prop::option::weighted(0.9, 0u64..131_072),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.02),
    )
        .prop_map(
            |(dt, cpu, memory, source, cs, ms, node_cpu, node_used, refuse, edit)| Tick {
                dt,
                cpu,
                memory,
                source,
                cpu_samples: cs,
                memory_samples: ms,
                node_cpu,
                node_used,
                refuse,
                edit,
            },
        )
}

/// A runs of a random load: the ticks repeat each figure for a few minutes so that breaches
/// last long enough to act on.
fn ticks() -> impl Strategy<Value = Vec<Tick>> {
    prop::collection::vec((tick(), 1usize..12), 1..40).prop_map(|runs| {
        let mut out = Vec::new();
        for (t, n) in runs {
            for i in 0..n {
                let mut t = t.clone();
                if i > 0 {
                    t.refuse = false;
                    t.edit = false;
                }
                out.push(t);
            }
        }
        out
    })
}

/// The VM at the start, within the policy and its envelope.
#[derive(Debug, Clone)]
struct Start {
    vcpus_pick: f64,
    memory_pick: f64,
    extra_vcpus: u32,
    cpu_hotplug: bool,
    memory_hotplug: bool,
    numa: bool,
    balloon: u64,
}

fn start() -> impl Strategy<Value = Start> {
    (
        0.0..1.0f64,
        0.0..1.0f64,
        0u32..6,
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.9),
        prop::sample::select(vec![0u64, 0, 1024, 2048, 1_000_000]),
    )
        .prop_map(|(v, m, e, ch, mh, n, b)| Start {
            vcpus_pick: v,
            memory_pick: m,
            extra_vcpus: e,
            cpu_hotplug: ch,
            memory_hotplug: mh,
            numa: n,
            balloon: b,
        })
}

fn initial_facts(p: &Policy, s: &Start) -> VmFacts {
    let vcpus = p.cpu.min + ((p.cpu.max - p.cpu.min) as f64 * s.vcpus_pick) as u64;
    let lo = dimm::round_up(p.memory.min.max(dimm::STATIC_MIB)).unwrap_or(dimm::STATIC_MIB);
    let hi = dimm::round_down(p.memory.max).unwrap_or(lo).max(lo);
    let memory = dimm::round_down(lo + ((hi - lo) as f64 * s.memory_pick) as u64).unwrap_or(lo);
    let vcpus = vcpus as u32;
    VmFacts {
        max_vcpus: Some(vcpus + s.extra_vcpus),
        cpu_hotplug: Some(s.cpu_hotplug),
        memory_hotplug: Some(s.memory_hotplug),
        numa: Some(s.numa),
        balloon_mib: Some(s.balloon.min(memory)),
        pending: Some(vec![]),
        digest: Some("digest-0".into()),
        ..VmFacts::new(101, "pve1", vcpus, memory)
    }
}

/// What `decide` sees as "known" for a resource: present, enough samples, in range.
fn known(figure: Option<f64>, samples: u32, p: &Policy) -> Option<f64> {
    figure.filter(|v| v.is_finite() && (0.0..=1.5).contains(v) && samples >= p.min_samples)
}

/// The run's two-phase use: decide on what `/cluster/resources` tells, and for a VM about to
/// change, decide again with its config; the second decision is applied.
fn run_decide(
    p: &Policy,
    full: &VmFacts,
    util: &Utilisation,
    node: &NodeHeadroom,
    prev: Option<&VmState>,
    now: u64,
) -> (pvescale::policy::Decision, VmState) {
    let phase1 = VmFacts::new(full.vmid, full.node.clone(), full.vcpus, full.memory_mib);
    let (d1, s1) = decide(p, &phase1, util, node, prev, now);
    if !d1.has_change() {
        return (d1, s1);
    }
    let (d2, s2) = decide(p, full, util, node, prev, now);
    // The same timers; only the second call can see that a back-off's config changed.
    for res in Resource::ALL {
        let (a, b) = (s1.resource(res), s2.resource(res));
        assert_eq!(
            (a.above_since, a.below_since),
            (b.above_since, b.below_since)
        );
    }
    (d2, s2)
}

#[test]
fn the_saved_failure_cases_are_replayed() {
    // A move of this file must take policy_props.proptest-regressions with it: proptest would
    // not say that it finds no saved cases, it would only stop replaying them.
    let persistence = proptest_config(1)
        .failure_persistence
        .expect("failures are persisted");
    let seeds = persistence.load_persisted_failures2(Some(file!()));
    assert!(
        !seeds.is_empty(),
        "no saved failure cases found for {} (policy_props.proptest-regressions beside it)",
        file!()
    );
}

proptest! {
    #![proptest_config(proptest_config(384))]

    #[test]
    fn decisions_respect_every_bound_and_timer(p in policy(), s in start(), ticks in ticks()) {
        let mut facts = initial_facts(&p, &s);
        let mut state: Option<VmState> = None;
        let mut now = T0;
        // Per resource: the last change (time, direction) and the refusal in force.
        let mut last: HashMap<Resource, (u64, Direction)> = HashMap::new();
        let mut refused: HashMap<(Resource, Direction), (u64, u32)> = HashMap::new();
        let mut edits = 0;

        for t in ticks {
            now += t.dt;
            if t.edit {
                edits += 1;
                facts.digest = Some(format!("digest-{edits}"));
            }
            let (util, node) = (t.utilisation(), t.node());
            let (decision, mut new_state) = run_decide(&p, &facts, &util, &node, state.as_ref(), now);
            prop_assert_eq!(new_state.last_seen, now);

            for res in Resource::ALL {
                let d = decision.resource(res);
                let rp = p.resource(res);
                let Some((from, to)) = d.change() else { continue };
                let dir = d.direction().unwrap_or(Direction::Up);
                let current = match res {
                    Resource::Cpu => u64::from(facts.vcpus),
                    Resource::Memory => facts.memory_mib,
                };
                prop_assert_eq!(from, current);
                // Direction and bounds.
                match d.action {
                    Action::Up { .. } => prop_assert!(to > from, "{}", d.reason),
                    _ => prop_assert!(to < from, "{}", d.reason),
                }
                prop_assert!(to >= rp.min && to <= rp.max, "{} outside {}..{}: {}", to, rp.min, rp.max, d.reason);
                match res {
                    Resource::Cpu => {
                        prop_assert!(to <= u64::from(facts.max_vcpus.unwrap_or(0)), "{}", d.reason);
                        prop_assert!(facts.cpu_hotplug == Some(true), "{}", d.reason);
                    }
                    Resource::Memory => {
                        prop_assert!(dimm::is_on_grid(to), "{} off the grid: {}", to, d.reason);
                        prop_assert!(facts.memory_hotplug == Some(true) && facts.numa == Some(true));
                    }
                }
                // Only on known data, past the threshold; shrink memory only on guest figures.
                let (figure, samples) = match res {
                    Resource::Cpu => (t.cpu, t.cpu_samples),
                    Resource::Memory => (t.memory, t.memory_samples),
                };
                let value = known(figure, samples, &p);
                prop_assert!(value.is_some(), "change on unknown data: {}", d.reason);
                let pct = value.unwrap_or(0.0).min(1.0) * 100.0;
                match dir {
                    Direction::Up => prop_assert!(pct > rp.high),
                    Direction::Down => {
                        prop_assert!(pct < rp.low);
                        if res == Resource::Memory {
                            prop_assert_eq!(t.source, MemorySource::Guest, "{}", &d.reason);
                            let in_use = pct / 100.0 * from as f64;
                            prop_assert!(
                                to as f64 >= in_use * (1.0 + p.memory_margin / 100.0) - 1e-6,
                                "below use + margin: {}", d.reason
                            );
                        }
                    }
                }
                // Cooldowns: never two changes of one resource within its cooldown, and never
                // a down within cooldown_down after an up.
                if let Some(&(at, prev_dir)) = last.get(&res) {
                    let since = now - at;
                    match dir {
                        Direction::Up => prop_assert!(since >= rp.cooldown_up.as_secs(), "{}", d.reason),
                        Direction::Down => {
                            prop_assert!(since >= rp.cooldown_down.as_secs(), "{}", d.reason);
                            if prev_dir == Direction::Up {
                                prop_assert!(since >= rp.cooldown_down.as_secs());
                            }
                        }
                    }
                }
                // Back-off: no new attempt in a refused direction before it ends, unless the
                // config changed.
                // (Our own changes of the sizes do not end a back-off; an edit by someone
                // else, a new digest, does.)
                if let Some(&(until, edits_then)) = refused.get(&(res, dir)) {
                    prop_assert!(
                        edits != edits_then || now >= until,
                        "retried within back-off: {}", d.reason
                    );
                }

                if t.refuse {
                    new_state.record_refusal(res, dir, now, p.backoff, facts.signature(), "refused");
                    refused.insert((res, dir), (now + p.backoff.as_secs(), edits));
                } else {
                    new_state.record_change(res, dir, from, to, now);
                    last.insert(res, (now, dir));
                    match res {
                        Resource::Cpu => facts.vcpus = u32::try_from(to).unwrap_or(u32::MAX),
                        Resource::Memory => {
                            facts.memory_mib = to;
                            if let Some(b) = d.balloon_mib {
                                facts.balloon_mib = Some(b);
                            }
                        }
                    }
                    // balloon never above memory
                    prop_assert!(facts.balloon_mib.unwrap_or(0) <= facts.memory_mib);
                }
            }
            state = Some(new_state);
        }
    }

    #[test]
    fn schedule_windows_hold_whatever_the_load(
        p in policy(),
        s in start(),
        ticks in ticks(),
        effect in prop_oneof![
            Just(WindowEffect::Freeze),
            Just(WindowEffect::FreezeScaleDown),
            (prop::option::of(1u64..12), prop::option::of(1024u64..20_000))
                .prop_map(|(cpu, memory_mib)| WindowEffect::Floor { cpu, memory_mib }),
        ],
    ) {
        let mut p = p;
        p.windows = vec![WindowInForce {
            name: "w".into(),
            when: "Sat 01:00..05:00".into(),
            effect,
            until: T0 + 86_400,
            until_local: "05:00".into(),
        }];
        let mut facts = initial_facts(&p, &s);
        let mut state: Option<VmState> = None;
        let mut now = T0;
        for t in ticks {
            now += t.dt;
            let (util, node) = (t.utilisation(), t.node());
            let (decision, mut new_state) = run_decide(&p, &facts, &util, &node, state.as_ref(), now);
            for res in Resource::ALL {
                let d = decision.resource(res);
                let Some((from, to)) = d.change() else { continue };
                match effect {
                    WindowEffect::Freeze => prop_assert!(false, "a change in a freeze: {}", d.reason),
                    WindowEffect::FreezeScaleDown => {
                        prop_assert!(to > from, "a shrink in a scale-down freeze: {}", d.reason)
                    }
                    WindowEffect::Floor { .. } => {
                        // A shrink never goes below the floor (within max, on the DIMM grid).
                        if let Some(floor) = effect.floor(res).filter(|_| to < from) {
                            let bound = match res {
                                Resource::Cpu => floor.min(p.cpu.max),
                                Resource::Memory => dimm::round_down(floor.min(p.memory.max)).unwrap_or(0),
                            };
                            prop_assert!(to >= bound.min(from), "below the floor {floor}: {}", d.reason);
                        }
                    }
                }
                // The change succeeds.
                match res {
                    Resource::Cpu => facts.vcpus = u32::try_from(to).unwrap_or(u32::MAX),
                    Resource::Memory => facts.memory_mib = to,
                }
                let dir = d.direction().unwrap_or(Direction::Up);
                new_state.record_change(res, dir, from, to, now);
            }
            state = Some(new_state);
        }
    }

    #[test]
    fn a_windows_guest_never_shrinks_whatever_the_load(p in policy(), s in start(), ticks in ticks()) {
        let mut facts = VmFacts { windows: Some(true), ..initial_facts(&p, &s) };
        let mut state: Option<VmState> = None;
        let mut now = T0;
        for t in ticks {
            now += t.dt;
            let (util, node) = (t.utilisation(), t.node());
            let (decision, mut new_state) = run_decide(&p, &facts, &util, &node, state.as_ref(), now);
            for res in Resource::ALL {
                let d = decision.resource(res);
                let Some((from, to)) = d.change() else { continue };
                prop_assert!(to > from, "a Windows guest shrunk: {}", d.reason);
                match res {
                    Resource::Cpu => facts.vcpus = u32::try_from(to).unwrap_or(u32::MAX),
                    Resource::Memory => facts.memory_mib = to,
                }
                new_state.record_change(res, Direction::Up, from, to, now);
            }
            state = Some(new_state);
        }
    }

    #[test]
    fn constant_load_inside_the_band_never_changes_anything(
        p in policy(),
        s in start(),
        cpu_pos in 0.01..0.99f64,
        mem_pos in 0.01..0.99f64,
        dts in prop::collection::vec(prop_oneof![Just(60u64), 1u64..3600], 1..200),
        node_cpu in prop::option::of(0.0..1.0f64),
    ) {
        let facts = initial_facts(&p, &s);
        let util = Utilisation {
            cpu: Some((p.cpu.low + (p.cpu.high - p.cpu.low) * cpu_pos) / 100.0),
            memory: Some((p.memory.low + (p.memory.high - p.memory.low) * mem_pos) / 100.0),
            memory_source: MemorySource::Guest,
            cpu_samples: 100,
            memory_samples: 100,
            ..Utilisation::unknown()
        };
        let node = NodeHeadroom { cpu: node_cpu, ..NodeHeadroom::unknown("pve1") };
        let mut state = None;
        let mut now = T0;
        for dt in dts {
            now += dt;
            let (d, s) = run_decide(&p, &facts, &util, &node, state.as_ref(), now);
            prop_assert_eq!(d.cpu.action, Action::Keep, "{}", d.cpu.reason);
            prop_assert_eq!(d.memory.action, Action::Keep, "{}", d.memory.reason);
            state = Some(s);
        }
    }

    #[test]
    fn unknown_data_never_changes_anything(
        p in policy(),
        s in start(),
        dts in prop::collection::vec(1u64..600, 1..100),
        samples in 0u32..3,
        figure in prop_oneof![Just(None), Just(Some(f64::NAN)), Just(Some(-0.5)), (1.51..10.0f64).prop_map(Some)],
    ) {
        let mut p = p;
        p.min_samples = 3;
        let facts = initial_facts(&p, &s);
        // Samples short, or the figure missing or out of range, for both resources.
        let util = Utilisation {
            cpu: figure.or(Some(0.01)),
            memory: figure.or(Some(0.01)),
            memory_source: MemorySource::Guest,
            cpu_samples: if figure.is_none() { samples } else { 50 },
            memory_samples: if figure.is_none() { samples } else { 50 },
            ..Utilisation::unknown()
        };
        let mut state = None;
        let mut now = T0;
        for dt in dts {
            now += dt;
            let (d, s) = decide(&p, &facts, &util, &NodeHeadroom::unknown("pve1"), state.as_ref(), now);
            prop_assert!(!d.has_change(), "{} / {}", d.cpu.reason, d.memory.reason);
            prop_assert_eq!(s.cpu.above_since.or(s.cpu.below_since), None);
            prop_assert_eq!(s.memory.above_since.or(s.memory.below_since), None);
            state = Some(s);
        }
    }

    #[test]
    fn dimm_rounding_is_on_the_grid_and_monotone(mib in 0u64..700_000) {
        if let Some(up) = dimm::round_up(mib) {
            prop_assert!(dimm::is_on_grid(up) && up >= mib);
            prop_assert!(dimm::next_below(up).is_none_or(|b| b < mib));
        }
        if let Some(down) = dimm::round_down(mib) {
            prop_assert!(dimm::is_on_grid(down) && down <= mib);
            prop_assert!(dimm::next_above(down).is_none_or(|a| a > mib));
        }
    }
}

/// A container's memory over an hour of minutes with constant use: `window` MiB in the window's
/// average and `newest` MiB in the newest sample, that sample `age` seconds old at each run.
/// Every change is applied. Returns the shrinks `(from, to)`.
fn container_shrinks(
    policy: &Policy,
    size: u64,
    window: f64,
    newest: f64,
    age: u64,
) -> Vec<(u64, u64)> {
    use pvescale::guest::GuestKind;
    use pvescale::policy::{SampleView, ViewPoint};
    let mut size = size;
    let mut state: Option<VmState> = None;
    let mut shrinks = Vec::new();
    for m in 0..60 {
        let t = T0 + m * 60;
        let facts = VmFacts {
            kind: GuestKind::Ct,
            max_vcpus: Some(32),
            cpu_hotplug: Some(true),
            memory_hotplug: Some(true),
            numa: Some(true),
            pending: Some(Vec::new()),
            ..VmFacts::new(200, "pve1", 2, size)
        };
        let fraction = |mib: f64| (mib / size as f64).min(1.0);
        let util = Utilisation {
            cpu: Some(0.5),
            memory: Some(fraction(window)),
            memory_source: MemorySource::Guest,
            cpu_samples: 30,
            memory_samples: 30,
            memory_view: SampleView {
                points: vec![ViewPoint {
                    t: t - age,
                    sample: fraction(newest),
                    short: fraction(newest),
                }],
                step_secs: 60,
            },
            ..Utilisation::unknown()
        };
        let node = NodeHeadroom::unknown("pve1");
        let (d, s) = decide(policy, &facts, &util, &node, state.as_ref(), t);
        if let Action::Down { from, to } = d.memory.action {
            shrinks.push((from, to));
            size = to;
        }
        state = Some(s);
    }
    shrinks
}

proptest! {
    #![proptest_config(proptest_config(96))]

    /// A container never shrinks below its use (the larger of the window's and the newest
    /// sample's) plus the margin, never by more than an eighth at a time, and never on a sample
    /// older than 3 minutes: below use, the kernel OOM-kills inside it.
    #[test]
    fn a_container_shrinks_only_above_its_use_in_small_steps_on_fresh_data(
        policy in policy(),
        size in 64u64..65_536,
        window in 0.0..1.0f64,
        newest in 0.0..1.2f64,
        age in prop_oneof![4 => 0u64..180, 1 => 181u64..900],
    ) {
        let (window, newest) = (window * size as f64, newest * size as f64);
        let shrinks = container_shrinks(&policy, size, window, newest, age);
        if age > 180 {
            prop_assert!(shrinks.is_empty(), "stale data: {shrinks:?}");
        }
        let floor = window.max(newest).min(size as f64) * (1.0 + policy.memory_margin / 100.0);
        for &(from, to) in &shrinks {
            prop_assert!(to as f64 + 1.0 >= floor, "{from} → {to} below {floor}: {shrinks:?}");
            prop_assert!(from - to <= (from / 8).max(1), "{from} → {to}: {shrinks:?}");
        }
    }
}
