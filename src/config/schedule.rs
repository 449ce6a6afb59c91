//! `[[schedule]]`: weekly windows that freeze the VMs they select, or set floors for them.

use std::collections::BTreeSet;

use jiff::tz::TimeZone;

use super::any_tag;
use crate::policy::{WindowEffect, WindowInForce};
use crate::schedule::{WeeklyWindow, local_time_label};

/// One validated `[[schedule]]`.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub(super) name: Option<String>,
    pub(super) windows: Vec<WeeklyWindow>,
    /// `timezone`, where set; else the windows are read in the local zone.
    pub(super) zone: Option<TimeZone>,
    pub(super) vmids: BTreeSet<u32>,
    pub(super) tags: Vec<String>,
    pub(super) pools: Vec<String>,
    pub(super) effect: WindowEffect,
}

impl Schedule {
    /// Any of its `vmids`, `tags` or `pools`; a schedule that names none is for every managed
    /// VM.
    pub fn matches(&self, vmid: u32, tags: &[String], pool: Option<&str>) -> bool {
        if self.vmids.is_empty() && self.tags.is_empty() && self.pools.is_empty() {
            return true;
        }
        self.vmids.contains(&vmid)
            || any_tag(&self.tags, tags)
            || pool.is_some_and(|p| self.pools.iter().any(|q| q == p))
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn windows(&self) -> &[WeeklyWindow] {
        &self.windows
    }

    pub fn effect(&self) -> WindowEffect {
        self.effect
    }

    /// The window of this schedule in force at `now`, if any; `local` is the zone used where
    /// the schedule sets none.
    pub fn in_force(&self, now: u64, local: &TimeZone) -> Option<WindowInForce> {
        let zone = self.zone.as_ref().unwrap_or(local);
        self.windows.iter().find_map(|w| {
            let occurrence = w.occurrence_at(now, zone)?;
            Some(WindowInForce {
                name: self.name.clone().unwrap_or_else(|| w.text().to_string()),
                when: w.text().to_string(),
                effect: self.effect,
                until: occurrence.end,
                until_local: local_time_label(occurrence.end, now, zone),
            })
        })
    }
}
