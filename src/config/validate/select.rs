//! `[select]`: tags, VM ids and pools.

use std::collections::HashSet;

use crate::guest::GuestKind;

use super::*;

impl Validator<'_> {
    pub(super) fn selection(&mut self, raw: Option<&RawSelect>) -> Option<Selection> {
        let key = root().key("select");
        let Some(raw) = raw else {
            self.problem(
                &key,
                "[select] is missing, so no VM would be managed: set tags, vmids or pools",
            );
            return None;
        };
        let tags = self.tags(&key.key("tags"), &raw.tags);
        let vmids = self.vmids(&key.key("vmids"), &raw.vmids);
        let pools = self.pools(&key.key("pools"), &raw.pools);
        let exclude_tags = self.tags(&key.key("exclude_tags"), &raw.exclude_tags);
        let exclude_vmids = self.vmids(&key.key("exclude_vmids"), &raw.exclude_vmids);
        if tags.is_empty() && vmids.is_empty() && pools.is_empty() {
            self.problem(&key, "[select] matches no VM: set tags, vmids or pools");
            return None;
        }
        let excluded: HashSet<&String> = exclude_tags.iter().collect();
        for t in tags.iter().filter(|t| excluded.contains(t)) {
            self.warn(
                &key.key("exclude_tags"),
                format_args!("tag {t:?} is both selected and excluded; excluded wins"),
            );
        }
        for id in vmids.intersection(&exclude_vmids) {
            self.warn(
                &key.key("exclude_vmids"),
                format_args!("VM {id} is both selected and excluded; excluded wins"),
            );
        }
        let types = self.guest_types(&key.key("types"), raw.types.as_deref())?;
        Some(Selection::new(tags, vmids, pools, exclude_tags, exclude_vmids).with_types(types))
    }

    /// `types`: `"vm"` and/or `"ct"`. Absent: VMs only, so that an upgrade never starts
    /// resizing containers a selection happened to match before.
    pub(super) fn guest_types(
        &mut self,
        key: &KeyPath,
        raw: Option<&[String]>,
    ) -> Option<BTreeSet<GuestKind>> {
        let Some(raw) = raw else {
            return Some(BTreeSet::from([GuestKind::Vm]));
        };
        let mut out = BTreeSet::new();
        for (i, text) in raw.iter().enumerate() {
            match GuestKind::parse(text) {
                Some(kind) => {
                    out.insert(kind);
                }
                None => self.problem(
                    &key.index(i),
                    format!("{text:?} is not a guest type: \"vm\" (QEMU) or \"ct\" (LXC)"),
                ),
            }
        }
        if out.is_empty() && raw.is_empty() {
            self.problem(
                key,
                "is empty, so no guest would be managed: \"vm\", \"ct\" or both",
            );
        }
        (!out.is_empty()).then_some(out)
    }

    /// Tags as Proxmox VE allows them (`[a-z0-9_][a-z0-9_+.-]*`, any case), lowercased, deduplicated.
    /// Linear: the tags seen are kept in a set (a config with 80,000 tags took 5 s with a
    /// list, and millions never ended).
    pub(super) fn tags(&mut self, key: &KeyPath, raw: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (i, t) in raw.iter().enumerate() {
            if !valid_tag(t) {
                self.problem(
                    &key.index(i),
                    format!(
                        "{t:?} is not a Proxmox VE tag: letters, digits, '_', '-', '+' and '.', not \
                         starting with '-', '+' or '.'"
                    ),
                );
                continue;
            }
            let t = t.to_ascii_lowercase();
            if seen.insert(t.clone()) {
                out.push(t);
            }
        }
        out
    }

    pub(super) fn vmids(&mut self, key: &KeyPath, raw: &[u32]) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for (i, id) in raw.iter().enumerate() {
            if (100..=999_999_999).contains(id) {
                out.insert(*id);
            } else {
                self.problem(
                    &key.index(i),
                    format!("{id} is not a VM ID: Proxmox VE uses 100 to 999999999"),
                );
            }
        }
        out
    }

    pub(super) fn pools(&mut self, key: &KeyPath, raw: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, p) in raw.iter().enumerate() {
            let ok = !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'));
            if !ok {
                self.problem(
                    &key.index(i),
                    format!(
                        "{p:?} is not a Proxmox VE pool name: letters, digits, '-', '_' (and '/' \
                         for nested pools)"
                    ),
                );
            } else if seen.insert(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

pub(super) fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}
