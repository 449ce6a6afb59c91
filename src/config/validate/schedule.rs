//! `[[schedule]]`: when (weekly windows), which VMs, and what it does (freeze or floor).

use super::*;
use crate::config::Schedule;
use crate::config::raw::RawSchedule;
use crate::policy::WindowEffect;
use crate::schedule::{WeeklyWindow, zone_named};

impl Validator<'_> {
    pub(super) fn schedules(&mut self, raw: &[RawSchedule], policy: &Policy) -> Vec<Schedule> {
        let schedules: Vec<Schedule> = raw
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.schedule(&root().key("schedule").index(i), s, policy))
            .collect();
        let mut seen = BTreeSet::new();
        for (i, s) in raw.iter().enumerate() {
            if let Some(name) = &s.name
                && !seen.insert(name.as_str())
            {
                self.problem(
                    &root().key("schedule").index(i).key("name"),
                    format!(
                        "{name:?} is the name of an earlier [[schedule]]; names must be unique"
                    ),
                );
            }
        }
        schedules
    }

    fn schedule(&mut self, key: &KeyPath, raw: &RawSchedule, policy: &Policy) -> Option<Schedule> {
        let before = self.problems.len();
        let name = match raw.name.as_deref().map(str::trim) {
            Some("") => {
                self.problem(
                    &key.key("name"),
                    "is empty; leave it out to name the window by its time",
                );
                None
            }
            Some(n) if n.chars().any(char::is_control) => {
                self.problem(&key.key("name"), "must not contain control characters");
                None
            }
            other => other.map(str::to_string),
        };
        let windows = self.windows(key, raw);
        let zone = raw.timezone.as_deref().and_then(|tz| match zone_named(tz) {
            Ok(zone) => Some(zone),
            Err(e) => {
                self.problem(&key.key("timezone"), e);
                None
            }
        });
        let tags = self.tags(&key.key("tags"), &raw.tags);
        let vmids = self.vmids(&key.key("vmids"), &raw.vmids);
        let pools = self.pools(&key.key("pools"), &raw.pools);
        let effect = self.effect(key, raw, policy);
        (self.problems.len() == before).then_some(Schedule {
            name,
            windows,
            zone,
            vmids,
            tags,
            pools,
            effect: effect?,
        })
    }

    fn windows(&mut self, key: &KeyPath, raw: &RawSchedule) -> Vec<WeeklyWindow> {
        let key = key.key("when");
        let texts = match &raw.when {
            Some(when) => when.to_vec(),
            None => Vec::new(),
        };
        if texts.is_empty() {
            self.problem(
                &key,
                "is needed: when the window is, e.g. when = \"Sat 01:00..05:00\" or \
                 when = [\"Mon..Fri 07:00..09:00\", \"Sat 09:00..12:00\"]",
            );
        }
        let many = texts.len() > 1;
        texts
            .iter()
            .enumerate()
            .filter_map(|(i, text)| match WeeklyWindow::parse(text) {
                Ok(w) => Some(w),
                Err(e) => {
                    let at = if many { key.index(i) } else { key.clone() };
                    self.problem(&at, e);
                    None
                }
            })
            .collect()
    }

    fn effect(
        &mut self,
        key: &KeyPath,
        raw: &RawSchedule,
        policy: &Policy,
    ) -> Option<WindowEffect> {
        match (raw.freeze.as_deref(), &raw.floor) {
            (Some(_), Some(_)) => {
                self.problem(
                    key,
                    "sets both freeze and floor; a schedule does one: write two [[schedule]] entries",
                );
                None
            }
            (None, None) => {
                self.problem(
                    key,
                    "does nothing: set freeze = \"all\" or \"scale-down\", or floor = { cpu = 4, memory = \"8GiB\" }",
                );
                None
            }
            (Some("all"), None) => Some(WindowEffect::Freeze),
            (Some("scale-down"), None) => Some(WindowEffect::FreezeScaleDown),
            (Some(other), None) => {
                self.problem(
                    &key.key("freeze"),
                    format!("{other:?} is not a freeze: \"all\" (no change) or \"scale-down\" (no shrink)"),
                );
                None
            }
            (None, Some(floor)) => {
                let cpu = floor.cpu.map(|v| v.0);
                let memory_mib = floor.memory.map(|m| m.0);
                let floor_key = key.key("floor");
                if cpu.is_none() && memory_mib.is_none() {
                    self.problem(
                        &floor_key,
                        "sets no floor: cpu = 4, memory = \"8GiB\", or both",
                    );
                    return None;
                }
                if cpu == Some(0) {
                    self.problem(&floor_key.key("cpu"), "must be at least 1 vCPU");
                }
                if memory_mib == Some(0) {
                    self.problem(&floor_key.key("memory"), "must be more than 0");
                }
                for (resource, value) in [(Resource::Cpu, cpu), (Resource::Memory, memory_mib)] {
                    let max = policy.resource(resource).max;
                    if let Some(v) = value
                        && v > max
                    {
                        self.warn(
                            &floor_key.key(resource.name()),
                            format_args!(
                                "is above [policy.{}] max ({max}); a VM is raised no further than its max",
                                resource.name()
                            ),
                        );
                    }
                }
                Some(WindowEffect::Floor { cpu, memory_mib })
            }
        }
    }
}
