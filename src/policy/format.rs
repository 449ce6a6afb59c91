//! How the policy words its reasons: sizes, changes, percentages and durations.

use super::{GuestKind, Resource};

/// A threshold as written in the config: `80`, or `80.5`.
pub(super) fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

pub(super) fn round_pct(v: f64) -> String {
    format!("{v:.0}")
}

/// A percentage compared with a threshold: whole percent, unless rounding would make it look
/// equal to the threshold (then one decimal: `80.4% > 80%`).
pub(super) fn pct_against(v: f64, threshold: f64) -> String {
    let whole = format!("{v:.0}");
    if whole == num(threshold) && v != threshold {
        format!("{v:.1}%")
    } else {
        format!("{whole}%")
    }
}

/// `1 vCPU`, `4 vCPUs`, `4096 MiB`.
pub(super) fn fmt_size(res: Resource, n: u64) -> String {
    match res {
        Resource::Cpu if n == 1 => "1 vCPU".into(),
        Resource::Cpu => format!("{n} vCPUs"),
        Resource::Memory => format!("{n} MiB"),
    }
}

/// `2 → 4 vCPUs`, `4096 → 6144 MiB`.
pub(super) fn fmt_change(res: Resource, from: u64, to: u64) -> String {
    match res {
        Resource::Cpu if to == 1 => format!("{from} → 1 vCPU"),
        Resource::Cpu => format!("{from} → {to} vCPUs"),
        Resource::Memory => format!("{from} → {to} MiB"),
    }
}

/// [`fmt_change`] in the guest's words: a container's CPUs are `cores`.
pub(super) fn fmt_change_of(kind: GuestKind, res: Resource, from: u64, to: u64) -> String {
    let text = fmt_change(res, from, to);
    match (kind, res) {
        (GuestKind::Ct, Resource::Cpu) => text.replace("vCPUs", "cores").replace("vCPU", "core"),
        _ => text,
    }
}

/// An elapsed time, rounded down to the minute above one minute, written as the config
/// writes durations (`units::fmt_duration`): `45s`, `4m`, `2h`, `1h5m`.
pub fn fmt_duration(secs: u64) -> String {
    let shown = if secs < 60 { secs } else { secs / 60 * 60 };
    crate::units::fmt_duration(std::time::Duration::from_secs(shown))
}

/// A time left, rounded up to the minute above one minute (never says `0m left`).
pub(super) fn fmt_left(secs: u64) -> String {
    if secs <= 60 {
        fmt_duration(secs)
    } else {
        fmt_duration(secs.div_ceil(60) * 60)
    }
}
