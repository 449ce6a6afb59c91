//! QEMU config keys, parameter checking, the write protocol (pending section, hotplug rules,
//! DIMM grid) as qemu-server does it.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Version, Vm, parse_memory};

/// How a parameter value is checked (and, for config keys, how it is returned in JSON).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PType {
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    Num {
        min: f64,
        max: Option<f64>,
    },
    Bool,
    Enum(&'static [&'static str]),
    Str {
        max_len: Option<usize>,
    },
    /// `[current=]N` (string since 8.1, integer on 8.0).
    Memory,
    Hotplug,
    Tags,
    DnsName,
    ConfigIdList,
    Node,
    Vmid,
}

const fn int(min: i64) -> PType {
    PType::Int {
        min: Some(min),
        max: None,
    }
}
const fn int_r(min: i64, max: i64) -> PType {
    PType::Int {
        min: Some(min),
        max: Some(max),
    }
}
const STR: PType = PType::Str { max_len: None };

const LOCKS: &[&str] = &[
    "backup",
    "clone",
    "create",
    "migrate",
    "rollback",
    "snapshot",
    "snapshot-delete",
    "suspending",
    "suspended",
];

/// Numbered keys: prefix and number of slots.
const NUMBERED: &[(&str, u32)] = &[
    ("hostpci", 16),
    ("ide", 4),
    ("ipconfig", 32),
    ("net", 32),
    ("numa", 8),
    ("parallel", 3),
    ("sata", 6),
    ("scsi", 31),
    ("serial", 4),
    ("unused", 256),
    ("usb", 14),
    ("virtio", 16),
    ("virtiofs", 10),
];

/// Type of a QEMU config key for this version, or None if the key does not exist.
pub(crate) fn config_key_type(key: &str, v: Version) -> Option<PType> {
    let t = match key {
        "acpi" | "autostart" | "keephugepages" | "kvm" | "localtime" | "numa" | "onboot"
        | "protection" | "reboot" | "tablet" | "tdf" | "template" | "ciupgrade" => PType::Bool,
        "allow-ksm" if v.is_pve9() => PType::Bool,
        "balloon" => int(0),
        "cores" | "sockets" | "vcpus" | "smp" => int(1),
        "cpuunits" => int_r(1, 262144),
        "shares" => int_r(0, 50000),
        "migrate_speed" => int(0),
        "cpulimit" => PType::Num {
            min: 0.0,
            max: Some(128.0),
        },
        "migrate_downtime" => PType::Num {
            min: 0.0,
            max: None,
        },
        "memory" => PType::Memory,
        "hotplug" => PType::Hotplug,
        "tags" => PType::Tags,
        "name" => PType::DnsName,
        "lock" => PType::Enum(LOCKS),
        "arch" => PType::Enum(&["x86_64", "aarch64"]),
        "bios" => PType::Enum(&["seabios", "ovmf"]),
        "hugepages" => PType::Enum(&["any", "2", "1024"]),
        "citype" => PType::Enum(&["configdrive2", "nocloud", "opennebula"]),
        "ostype" => PType::Enum(&[
            "other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11",
            "l24", "l26", "solaris",
        ]),
        "scsihw" => PType::Enum(&[
            "lsi",
            "lsi53c810",
            "virtio-scsi-pci",
            "virtio-scsi-single",
            "megasas",
            "pvscsi",
        ]),
        "keyboard" => PType::Enum(&[
            "de", "de-ch", "da", "en-gb", "en-us", "es", "fi", "fr", "fr-be", "fr-ca", "fr-ch",
            "hu", "is", "it", "ja", "lt", "mk", "nl", "no", "pl", "pt", "pt-br", "sv", "sl", "tr",
        ]),
        "description" => PType::Str {
            max_len: Some(8192),
        },
        "smbios1" => PType::Str { max_len: Some(512) },
        "affinity" | "agent" | "args" | "audio0" | "boot" | "bootdisk" | "cdrom" | "cicustom"
        | "cipassword" | "ciuser" | "cpu" | "efidisk0" | "hookscript" | "ivshmem" | "machine"
        | "nameserver" | "rng0" | "searchdomain" | "spice_enhancements" | "sshkeys"
        | "startdate" | "startup" | "tpmstate0" | "vga" | "vmgenid" | "vmstatestorage"
        | "watchdog" => STR,
        "amd-sev" if v.at_least(8, 2) => STR,
        "intel-tdx" if v.is_pve9() => STR,
        _ => {
            let (prefix, n) = split_numbered(key)?;
            let (_, slots) = NUMBERED.iter().find(|(p, _)| *p == prefix)?;
            if n >= *slots || (prefix == "virtiofs" && !v.at_least(8, 2)) {
                return None;
            }
            STR
        }
    };
    Some(t)
}

fn split_numbered(key: &str) -> Option<(&str, u32)> {
    let pos = key.find(|c: char| c.is_ascii_digit())?;
    let (p, n) = key.split_at(pos);
    if p.is_empty() || n.len() > 3 || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    Some((p, n.parse().ok()?))
}

/// Which privilege a config key needs (None: only root@pam may set it).
pub(crate) fn key_privilege(key: &str) -> Option<&'static str> {
    let base = split_numbered(key).map(|(p, _)| p).unwrap_or(key);
    Some(match base {
        "cores" | "cpu" | "cpulimit" | "cpuunits" | "numa" | "smp" | "sockets" | "vcpus"
        | "affinity" => "VM.Config.CPU",
        "memory" | "balloon" | "shares" | "allow-ksm" => "VM.Config.Memory",
        "acpi" | "hotplug" | "kvm" | "machine" | "scsihw" | "smbios1" | "tablet" | "vga"
        | "watchdog" | "audio0" | "rng0" | "ivshmem" | "spice_enhancements" | "amd-sev"
        | "intel-tdx" | "keephugepages" | "hugepages" | "arch" | "vmgenid" => "VM.Config.HWType",
        "boot" | "bootdisk" | "vmstatestorage" | "ide" | "sata" | "scsi" | "virtio" | "efidisk"
        | "tpmstate" | "unused" | "efidisk0" | "tpmstate0" => "VM.Config.Disk",
        "cdrom" => "VM.Config.CDROM",
        "net" | "ipconfig" => "VM.Config.Network",
        "cicustom" | "cipassword" | "citype" | "ciuser" | "nameserver" | "searchdomain"
        | "sshkeys" | "ciupgrade" => "VM.Config.Cloudinit",
        "args" | "hostpci" | "lock" => return None,
        "usb" | "serial" | "parallel" | "virtiofs" => "VM.Config.HWType",
        _ => "VM.Config.Options",
    })
}

/// Integer-typed keys are JSON numbers in `config`/`pending`, booleans 0/1, the rest strings.
pub(crate) fn config_value_json(key: &str, value: &str, v: Version) -> serde_json::Value {
    use serde_json::Value;
    match config_key_type(key, v) {
        Some(PType::Int { .. }) | Some(PType::Bool) => match value.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::from(value),
        },
        Some(PType::Memory) if !v.memory_is_string() => match value.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::from(value),
        },
        _ => Value::from(value),
    }
}

fn is_int(s: &str) -> bool {
    let d = s.strip_prefix(['-', '+']).unwrap_or(s);
    !d.is_empty() && d.len() <= 18 && d.bytes().all(|b| b.is_ascii_digit())
}

fn is_number(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && s.parse::<f64>().map(|f| f.is_finite()).unwrap_or(false)
}

pub(crate) fn valid_node_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.'))
}

pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split([',', ';', ' ', '\0'])
        .map(|x| x.trim())
        .filter(|x| !x.is_empty())
        .map(|x| x.to_string())
        .collect()
}

/// Checks one value; Err(message) like PVE::JSONSchema words it.
pub(crate) fn check_value(t: PType, value: &str, v: Version) -> Result<(), String> {
    match t {
        PType::Int { min, max } => {
            if !is_int(value) {
                return Err(format!("type check ('integer') failed - got '{value}'"));
            }
            let n: i64 = value.parse().unwrap_or(0);
            if let Some(m) = min
                && n < m
            {
                return Err(format!("value must have a minimum value of {m}"));
            }
            if let Some(m) = max
                && n > m
            {
                return Err(format!("value must have a maximum value of {m}"));
            }
            Ok(())
        }
        PType::Vmid => {
            if !is_int(value) {
                return Err(format!("type check ('integer') failed - got '{value}'"));
            }
            let n: i64 = value.parse().unwrap_or(0);
            if n < 100 {
                return Err("value must have a minimum value of 100".into());
            }
            if n > 999_999_999 {
                return Err("value must have a maximum value of 999999999".into());
            }
            Ok(())
        }
        PType::Num { min, max } => {
            if !is_number(value) {
                return Err(format!("type check ('number') failed - got '{value}'"));
            }
            let n: f64 = value.parse().unwrap_or(0.0);
            if n < min {
                return Err(format!(
                    "value must have a minimum value of {}",
                    crate::model::fmt_num(min)
                ));
            }
            if let Some(m) = max
                && n > m
            {
                return Err(format!(
                    "value must have a maximum value of {}",
                    crate::model::fmt_num(m)
                ));
            }
            Ok(())
        }
        PType::Bool => {
            if value == "0" || value == "1" {
                Ok(())
            } else {
                Err(format!("type check ('boolean') failed - got '{value}'"))
            }
        }
        PType::Enum(vals) => {
            if vals.contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "value '{value}' does not have a value in the enumeration '{}'",
                    vals.join(", ")
                ))
            }
        }
        PType::Str { max_len } => match max_len {
            Some(m) if value.chars().count() > m => {
                Err(format!("value may only be {m} characters long"))
            }
            _ => Ok(()),
        },
        PType::Memory => {
            if !v.memory_is_string() {
                return check_value(int(16), value, v);
            }
            let mut current = None;
            for part in value.split(',') {
                let (k, val) = match part.split_once('=') {
                    Some((k, val)) => (k.trim(), val.trim()),
                    None => ("current", part.trim()),
                };
                match k {
                    "current" => {
                        if current.is_some() {
                            return Err("invalid format - duplicate key in comma-separated list property: current".into());
                        }
                        if !is_int(val) {
                            return Err(format!(
                                "invalid format - current: type check ('integer') failed - got '{val}'"
                            ));
                        }
                        current = val.parse::<i64>().ok();
                    }
                    other => {
                        return Err(format!(
                            "invalid format - {other}: property is not defined in schema and the schema does not allow additional properties"
                        ));
                    }
                }
            }
            match current {
                Some(c) if c < 16 => {
                    Err("invalid format - current: value must have a minimum value of 16".into())
                }
                Some(_) => Ok(()),
                None => Err(
                    "invalid format - current: property is missing and it is not optional".into(),
                ),
            }
        }
        PType::Hotplug => {
            if value == "0" || value == "1" {
                return Ok(());
            }
            for f in value.split(',') {
                if !matches!(
                    f.trim(),
                    "network" | "disk" | "cpu" | "memory" | "usb" | "cloudinit"
                ) {
                    return Err(format!("invalid format - invalid hotplug feature '{f}'"));
                }
            }
            Ok(())
        }
        PType::Tags => {
            for t in split_list(value) {
                if !valid_tag(&t) {
                    return Err(format!("invalid format - invalid tag '{t}'"));
                }
            }
            Ok(())
        }
        PType::DnsName => {
            if valid_dns_name(value) {
                Ok(())
            } else {
                Err(format!(
                    "invalid format - value '{value}' does not look like a valid DNS name"
                ))
            }
        }
        PType::ConfigIdList => {
            for id in split_list(value) {
                let b = id.as_bytes();
                let ok = !b.is_empty()
                    && b[0].is_ascii_lowercase()
                    && b.iter().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-'
                    });
                if !ok {
                    return Err(format!("invalid format - invalid configuration ID '{id}'"));
                }
            }
            Ok(())
        }
        PType::Node => {
            if valid_node_name(value) {
                Ok(())
            } else {
                Err("invalid format - value does not look like a valid node name".into())
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// DIMM grid

/// Static memory below the hotpluggable DIMMs.
pub const STATIC_MEM_MIB: u64 = 1024;
/// Default maximum memory (40 physical address bits).
/// The most memory a VM may have with memory hotplug, in MiB (qemu-server Memory.pm
/// `get_max_mem`): `phys-bits` of its `cpu` option if set, else the host's bits, capped at 40
/// unless the CPU type is `host` or `max`; rounded down to even; 2^(bits − 21) MiB, at most
/// 4 TiB. 524288 MiB for the default CPU type on any host of 40 bits or more.
pub fn max_mem_mib(cpu_option: Option<&str>, host_bits: u32) -> u64 {
    let mut cputype = None;
    let mut phys_bits = None;
    for (i, part) in cpu_option.unwrap_or("").split(',').enumerate() {
        match part.split_once('=') {
            Some(("cputype", v)) => cputype = Some(v),
            Some(("phys-bits", v)) => phys_bits = Some(v),
            None if i == 0 && !part.is_empty() => cputype = Some(part),
            _ => {}
        }
    }
    let bits = match phys_bits {
        Some("host") => host_bits,
        Some(n) if n.parse::<u32>().is_ok() => n.parse::<u32>().unwrap_or(host_bits),
        _ if matches!(cputype, Some("host" | "max")) => host_bits,
        _ => host_bits.min(40),
    };
    let bits = (bits & !1).clamp(22, 62);
    (1u64 << (bits - 21)).min(4 * 1024 * 1024)
}

/// DIMM sizes in plug order: 32 × 512, 32 × 1024, 32 × 2048, ... (8 groups).
fn dimm_sizes() -> impl Iterator<Item = u64> {
    (0..8u32).flat_map(|j| std::iter::repeat_n(512u64 << j, 32))
}

/// Every memory size reachable by hotplug (1024, 1536, ..., 17408, 18432, ...).
pub fn dimm_grid() -> Vec<u64> {
    let mut v = vec![STATIC_MEM_MIB];
    let mut cur = STATIC_MEM_MIB;
    for d in dimm_sizes() {
        cur += d;
        v.push(cur);
    }
    v
}

/// Smallest grid value ≥ `mib` (what a hot-add of `mib` ends at).
pub fn grid_round_up(mib: u64) -> u64 {
    let mut cur = STATIC_MEM_MIB;
    if mib <= cur {
        return cur;
    }
    for d in dimm_sizes() {
        cur += d;
        if cur >= mib {
            return cur;
        }
    }
    cur
}

/// Largest grid value ≤ `mib` (what a hot-remove toward `mib` ends at).
pub fn grid_round_down(mib: u64) -> u64 {
    let mut cur = STATIC_MEM_MIB;
    for d in dimm_sizes() {
        if cur + d > mib {
            return cur;
        }
        cur += d;
    }
    cur
}

/// DIMM sizes plugged for a (grid) memory size, in plug order.
fn plugged_dimms(mem: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cur = STATIC_MEM_MIB;
    for d in dimm_sizes() {
        if cur + d > mem {
            break;
        }
        cur += d;
        out.push(d);
    }
    out
}

// ------------------------------------------------------------------------------------------
// The write protocol

/// A validated config write.
#[derive(Clone, Debug, Default)]
pub(crate) struct Update {
    pub set: BTreeMap<String, String>,
    pub delete: Vec<String>,
}

/// Result of running the write.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outcome {
    /// Per key, `hotplug problem - ...` texts.
    pub errors: BTreeMap<String, String>,
    /// Task log lines.
    pub log: Vec<String>,
    /// A guest refused an unplug (the real server takes seconds for this).
    pub refused: bool,
}

impl Outcome {
    /// The text PVE puts as the task's exit status (or, for PUT, what `errors` says).
    pub fn task_error(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        let mut s = String::from("400 Parameter verification failed.");
        for (k, v) in &self.errors {
            s.push(' ');
            s.push_str(k);
            s.push_str(": ");
            s.push_str(v.trim_end());
        }
        Some(s.replace('\n', " "))
    }
}

fn param_exc(key: &str, msg: &str) -> String {
    format!("400 Parameter verification failed.\n{key}: {msg}\n")
}

/// Runs the worker part of `update_vm_api`: write to pending, drop no-op changes, then apply
/// (hotplug on a live VM, everything on a stopped one).
pub(crate) fn run_update(vm: &mut Vm, upd: &Update, now: i64, host_bits: u32) -> Outcome {
    let mut out = Outcome::default();
    // Deletions into the pending section.
    for key in &upd.delete {
        if !vm.conf.contains_key(key) && !vm.pending.contains_key(key) {
            out.log.push(format!(
                "cannot delete '{key}' - not set in current configuration!"
            ));
            continue;
        }
        vm.pending.remove(key);
        vm.pending_delete.insert(key.clone());
    }
    for (k, v) in &upd.set {
        vm.pending_delete.remove(k);
        vm.pending.insert(k.clone(), v.clone());
    }
    cleanup_pending(vm);
    vm.touch(now);
    if vm.pending.is_empty() && vm.pending_delete.is_empty() {
        return out;
    }
    if vm.status.is_live() {
        // qemu-server passes the keys of this request (`$modified`) as the selection:
        // pending values of other keys wait, they are not tried again.
        let selection: BTreeSet<String> = upd
            .set
            .keys()
            .cloned()
            .chain(upd.delete.iter().cloned())
            .collect();
        hotplug_pending(vm, now, host_bits, &selection, &mut out);
    } else {
        apply_pending(vm);
    }
    vm.touch(now);
    out
}

/// Drops pending values equal to the current ones and deletions of unset keys.
pub(crate) fn cleanup_pending(vm: &mut Vm) {
    let conf = &vm.conf;
    vm.pending.retain(|k, v| conf.get(k) != Some(v));
    vm.pending_delete.retain(|k| conf.contains_key(k));
}

/// Applies everything (stopped VM).
pub(crate) fn apply_pending(vm: &mut Vm) {
    for k in std::mem::take(&mut vm.pending_delete) {
        vm.conf.remove(&k);
    }
    for (k, v) in std::mem::take(&mut vm.pending) {
        vm.conf.insert(k, v);
    }
}

/// Keys applied immediately even on a running VM.
fn fast_plug(key: &str) -> bool {
    matches!(
        key,
        "lock"
            | "name"
            | "onboot"
            | "shares"
            | "startup"
            | "description"
            | "protection"
            | "vmstatestorage"
            | "hookscript"
            | "tags"
    )
}

enum Plug {
    /// Applied: set the current value to this (None = delete).
    Apply(Option<String>),
    /// Not hotpluggable: stays pending.
    Skip,
    /// Hotplug failed with this message; stays pending.
    Fail(String),
}

fn hotplug_pending(
    vm: &mut Vm,
    now: i64,
    host_bits: u32,
    selection: &BTreeSet<String>,
    out: &mut Outcome,
) {
    let features = vm.hotplug();
    // Deletions first (sorted), as qemu-server does.
    let deletes: Vec<String> = vm
        .pending_delete
        .iter()
        .filter(|k| selection.contains(*k))
        .cloned()
        .collect();
    for key in deletes {
        let r = match key.as_str() {
            "hotplug" => {
                if features.contains("memory") || features.contains("cpu") {
                    Plug::Skip
                } else {
                    Plug::Apply(None)
                }
            }
            "vcpus" => {
                if !features.contains("cpu") {
                    Plug::Skip
                } else {
                    let max = vm.maxcpus();
                    cpu_hotplug(vm, max, out, now)
                }
            }
            "balloon" => {
                if vm.balloon() == Some(0) {
                    Plug::Skip
                } else {
                    Plug::Apply(None)
                }
            }
            "memory" => {
                if !features.contains("memory") || !vm.numa() {
                    Plug::Skip
                } else {
                    mem_hotplug(vm, 512, host_bits, out, now)
                }
            }
            "cpulimit" | "cpuunits" => Plug::Apply(None),
            k if fast_plug(k) => Plug::Apply(None),
            _ => Plug::Skip,
        };
        match r {
            Plug::Apply(_) => {
                vm.conf.remove(&key);
                vm.pending_delete.remove(&key);
            }
            Plug::Skip => {}
            Plug::Fail(msg) => {
                out.errors
                    .insert(key.clone(), format!("hotplug problem - {msg}"));
            }
        }
        vm.touch(now);
    }
    let sets: Vec<(String, String)> = vm
        .pending
        .iter()
        // Fast-plug keys are committed whatever the selection, as in qemu-server.
        .filter(|(k, _)| selection.contains(*k) || fast_plug(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in sets {
        let r = match key.as_str() {
            "hotplug" => {
                let new = crate::model::hotplug_features(Some(&value));
                let touches = |f: &str| new.contains(f) || features.contains(f);
                if touches("memory") || touches("cpu") {
                    Plug::Skip
                } else {
                    Plug::Apply(Some(value.clone()))
                }
            }
            "vcpus" => {
                if !features.contains("cpu") {
                    Plug::Skip
                } else {
                    match value.parse::<u32>() {
                        Ok(n) => cpu_hotplug(vm, n, out, now),
                        Err(_) => Plug::Skip,
                    }
                }
            }
            "balloon" => {
                let old_on = vm.balloon() != Some(0);
                let new_on = value != "0";
                if old_on != new_on {
                    Plug::Skip
                } else {
                    Plug::Apply(Some(value.clone()))
                }
            }
            "memory" => {
                if !features.contains("memory") || !vm.numa() {
                    Plug::Skip
                } else {
                    match parse_memory(&value) {
                        Some(target) => mem_hotplug(vm, target, host_bits, out, now),
                        None => Plug::Skip,
                    }
                }
            }
            "cpulimit" | "cpuunits" => Plug::Apply(Some(value.clone())),
            k if fast_plug(k) => Plug::Apply(Some(value.clone())),
            _ => Plug::Skip,
        };
        match r {
            Plug::Apply(v) => {
                match v {
                    Some(v) => vm.conf.insert(key.clone(), v),
                    None => vm.conf.remove(&key),
                };
                vm.pending.remove(&key);
            }
            Plug::Skip => {}
            Plug::Fail(msg) => {
                out.errors
                    .insert(key.clone(), format!("hotplug problem - {msg}"));
            }
        }
        vm.touch(now);
    }
}

fn cpu_hotplug(vm: &mut Vm, target: u32, out: &mut Outcome, now: i64) -> Plug {
    let max = vm.maxcpus();
    let current = vm.vcpus();
    if target > max {
        return Plug::Fail("you can't add more vcpus than maxcpus\n".into());
    }
    if target == current {
        return Plug::Apply(Some(target.to_string()));
    }
    if target > current {
        for i in current + 1..=target {
            out.log.push(format!("hotplug cpu{i}"));
        }
        return Plug::Apply(Some(target.to_string()));
    }
    let mut cur = current;
    let mut removed = 0u32;
    while cur > target {
        if let Some(allowed) = vm.cpu_unplug_limit()
            && removed >= allowed
        {
            out.refused = true;
            return Plug::Fail(param_exc("vcpus", &format!("error unplugging cpu{cur}")));
        }
        out.log.push(format!("unplug cpu{cur}"));
        cur -= 1;
        removed += 1;
        // Written after each successful unplug.
        vm.conf.insert("vcpus".into(), cur.to_string());
        vm.touch(now);
    }
    Plug::Apply(Some(target.to_string()))
}

fn mem_hotplug(vm: &mut Vm, target: u64, host_bits: u32, out: &mut Outcome, now: i64) -> Plug {
    let max_mem = max_mem_mib(vm.conf.get("cpu").map(String::as_str), host_bits);
    let current = vm.mem_mib();
    if target == current {
        return Plug::Apply(Some(vm.conf.get("memory").cloned().unwrap_or_default()));
    }
    if target < STATIC_MEM_MIB {
        return Plug::Fail(format!("memory can't be lower than {STATIC_MEM_MIB} MB"));
    }
    if target > max_mem {
        return Plug::Fail(format!(
            "you cannot add more memory than max mem {max_mem} MB!\n"
        ));
    }
    if target > current {
        let mut cur = STATIC_MEM_MIB;
        for (id, d) in dimm_sizes().enumerate() {
            cur += d;
            if cur > current {
                out.log.push(format!("hotplug memory dimm{id} ({d} MB)"));
            }
            if cur >= target {
                break;
            }
        }
        return Plug::Apply(Some(cur.to_string()));
    }
    let dimms = plugged_dimms(current);
    let mut cur = current;
    for (removed, (id, size)) in dimms.iter().enumerate().rev().enumerate() {
        let removed = removed as u32;
        if cur <= target {
            break;
        }
        out.log.push(format!("try to unplug memory dimm dimm{id}"));
        if let Some(allowed) = vm.mem_unplug_limit()
            && removed >= allowed
        {
            out.refused = true;
            return Plug::Fail(param_exc(
                &format!("dimm{id}"),
                "error unplug memory module",
            ));
        }
        cur = cur.saturating_sub(*size);
        vm.conf.insert("memory".into(), cur.to_string());
        vm.touch(now);
    }
    Plug::Apply(Some(cur.to_string()))
}

/// The set of keys of a VM that a new value would touch (for tests).
#[allow(dead_code)]
pub(crate) fn touched(upd: &Update) -> BTreeSet<String> {
    upd.set
        .keys()
        .cloned()
        .chain(upd.delete.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid() {
        let g = dimm_grid();
        assert_eq!(g[0], 1024);
        assert_eq!(g[1], 1536);
        assert_eq!(g[32], 17408);
        assert_eq!(g[33], 18432);
        assert_eq!(g[64], 50176);
        assert_eq!(g[65], 52224);
        assert_eq!(g[96], 115712);
        assert_eq!(g[97], 115712 + 4096);
        assert_eq!(grid_round_up(3000), 3072);
        assert_eq!(grid_round_down(3000), 2560);
        assert_eq!(grid_round_up(17500), 18432);
        assert_eq!(grid_round_down(18000), 17408);
        assert_eq!(grid_round_up(4096), 4096);
        assert_eq!(grid_round_down(4096), 4096);
    }

    #[test]
    fn max_mem_follows_phys_bits() {
        // 2^(even bits − 21) MiB, at most 4 TiB; default CPU types capped at 40 bits.
        assert_eq!(max_mem_mib(None, 46), 524288);
        assert_eq!(max_mem_mib(Some("x86-64-v2-AES"), 39), 131072);
        assert_eq!(max_mem_mib(Some("host"), 46), 4 * 1024 * 1024);
        assert_eq!(max_mem_mib(Some("cputype=max"), 44), 8 * 1024 * 1024 / 2);
        assert_eq!(max_mem_mib(Some("host,phys-bits=36"), 46), 32768);
        assert_eq!(max_mem_mib(Some("kvm64,phys-bits=host"), 43), 2097152);
    }

    #[test]
    fn values() {
        let v = Version::new(8, 4);
        assert!(check_value(int(1), "4", v).is_ok());
        assert!(check_value(int(1), "0", v).is_err());
        assert!(check_value(int(1), "x", v).is_err());
        assert!(check_value(PType::Memory, "current=4096", v).is_ok());
        assert!(check_value(PType::Memory, "4096", v).is_ok());
        assert!(check_value(PType::Memory, "4G", v).is_err());
        assert!(check_value(PType::Bool, "true", v).is_err());
        assert!(check_value(PType::Hotplug, "cpu,memory", v).is_ok());
        assert!(check_value(PType::Hotplug, "cpu,ram", v).is_err());
        assert!(config_key_type("net0", v).is_some());
        assert!(config_key_type("net32", v).is_none());
        assert!(config_key_type("bogus", v).is_none());
        assert!(config_key_type("allow-ksm", v).is_none());
        assert!(config_key_type("allow-ksm", Version::new(9, 1)).is_some());
    }
}
