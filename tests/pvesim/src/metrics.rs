//! Metrics: what a guest reports at a given simulated time, `metrics/export` and `rrddata`.

use std::io::Write;

use serde_json::{Map, Value};

use crate::model::{Kind, Node, Version, Vm, VmStatus};

const MIB: f64 = 1024.0 * 1024.0;

/// Deterministic noise: a value in [-1, 1] from the seed, guest and time.
pub(crate) fn noise(seed: u64, vmid: u32, t: i64, salt: u64) -> f64 {
    let mut x = seed
        ^ (vmid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (t as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ salt.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Noise {
    pub seed: u64,
    /// Relative amplitude (0.02 = ±2 %).
    pub amplitude: f64,
}

/// What a guest reports at one instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub status: VmStatus,
    pub vcpus: u32,
    pub mem_total: u64,
    /// CPU time of the whole QEMU process as a fraction of `vcpus` (0 when not running);
    /// above 1 when I/O threads add to saturated vCPUs, as Proxmox reports it.
    pub cpu: f64,
    /// Demand beyond what the VM could serve, for pressure figures.
    pub cpu_pressure: f64,
    pub mem_pressure: f64,
    /// Bytes used as the API reports it (guest view with balloon stats, host estimate without).
    pub mem_used: u64,
    /// Host view of the guest's memory (PVE 9 `memhost`).
    pub mem_host: u64,
    pub uptime: u64,
    pub netin: u64,
    pub netout: u64,
    pub diskread: u64,
    pub diskwrite: u64,
    /// Per second rates, for rrddata.
    pub net_rate: f64,
    pub disk_rate: f64,
    /// Running, but without stats (see `VmSpec::metrics_gap`).
    pub blind: bool,
}

impl Sample {
    pub fn live(&self) -> bool {
        self.status.is_live()
    }
}

/// What a guest wants at one instant, whatever its size: its [`crate::Pattern`]s with the
/// simulator's noise. The ground truth behind its figures, which show only what its size
/// serves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Demand {
    /// Busy cores the guest wants.
    pub cpu_cores: f64,
    /// MiB the guest wants.
    pub memory_mib: f64,
}

/// The guest's demand at simulated time `t` (`start` is the simulation's start).
pub(crate) fn vm_demand(vm: &Vm, t: i64, start: i64, nz: Noise) -> Demand {
    let rel = t - start;
    let jitter = |salt: u64| {
        if nz.amplitude > 0.0 {
            1.0 + nz.amplitude * noise(nz.seed, vm.vmid, t, salt)
        } else {
            1.0
        }
    };
    Demand {
        cpu_cores: vm.cpu_load.at(rel) * jitter(1),
        memory_mib: vm.mem_load.at(rel) * jitter(2),
    }
}

/// The guest at simulated time `t` (None before it existed).
pub(crate) fn vm_sample(vm: &Vm, t: i64, start: i64, nz: Noise) -> Option<Sample> {
    let e = vm.epoch_at(t)?;
    let rel = t - start;
    let vcpus = e.vcpus.max(1);
    let mem_mib = e.mem_mib.max(16);
    let mut s = Sample {
        status: e.status,
        vcpus,
        mem_total: mem_mib << 20,
        cpu: 0.0,
        cpu_pressure: 0.0,
        mem_pressure: 0.0,
        mem_used: 0,
        mem_host: 0,
        uptime: 0,
        netin: 0,
        netout: 0,
        diskread: 0,
        diskwrite: 0,
        net_rate: 0.0,
        disk_rate: 0.0,
        blind: vm
            .metrics_gap
            .is_some_and(|(from, to)| (from..to).contains(&rel)),
    };
    if !e.status.is_live() {
        return Some(s);
    }
    let Demand {
        cpu_cores: demand,
        memory_mib: mem_demand,
    } = vm_demand(vm, t, start, nz);
    // A guest runs on the vCPUs it has online, and uses the memory it has online.
    let online = e.online_vcpus.clamp(1, vcpus);
    let online_mem = e.online_mem_mib.clamp(1, mem_mib) as f64;
    let mut cap = online as f64;
    if e.cpulimit > 0.0 {
        cap = cap.min(e.cpulimit);
    }
    let busy = if e.status == VmStatus::Paused {
        0.0
    } else {
        demand.min(cap)
    };
    // qemu-server vmstatus: utime + stime of the QEMU process (vCPU threads, I/O threads,
    // vhost workers) over elapsed time × vCPUs, not capped at 1.
    s.cpu = (busy * (1.0 + vm.io_overhead) / vcpus as f64).max(0.0);
    s.cpu_pressure = if demand > cap && demand > 0.0 {
        (demand - cap) / demand
    } else {
        0.0
    };
    let guest_used = mem_demand.min(online_mem);
    s.mem_pressure = if mem_demand > online_mem && mem_demand > 0.0 {
        (mem_demand - online_mem) / mem_demand
    } else {
        0.0
    };
    let host = guest_used.max(mem_mib as f64 * 0.92).min(mem_mib as f64);
    s.mem_host = (host * MIB) as u64;
    s.mem_used = if vm.kind == Kind::Lxc || (vm.balloon_device() && vm.balloon_stats) {
        (guest_used * MIB) as u64
    } else {
        s.mem_host
    };
    s.uptime = (t - e.booted).max(0) as u64;
    let base = 2000.0 + (vm.vmid % 97) as f64 * 300.0;
    s.net_rate = base * (0.2 + s.cpu.min(1.0));
    s.disk_rate = base * 4.0 * (0.1 + s.cpu.min(1.0));
    s.netin = (s.net_rate * s.uptime as f64) as u64;
    s.netout = (s.net_rate * 0.6 * s.uptime as f64) as u64;
    s.diskread = (s.disk_rate * s.uptime as f64) as u64;
    s.diskwrite = (s.disk_rate * 0.4 * s.uptime as f64) as u64;
    Some(s)
}

/// Node totals at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NodeSample {
    pub busy: f64,
    pub mem_used: u64,
}

pub(crate) fn node_cpu(node: &Node, ns: &NodeSample) -> f64 {
    ((ns.busy + node.base_cpu) / node.cpus.max(1) as f64).clamp(0.0, 1.0)
}

pub(crate) fn node_mem_used(node: &Node, ns: &NodeSample) -> u64 {
    let total = node.memory_mib << 20;
    ((node.base_mem_mib << 20) + ns.mem_used).min(total)
}

/// Host load of every node at `t`.
pub(crate) fn node_samples<'a>(
    nodes: &[Node],
    vms: impl Iterator<Item = &'a Vm>,
    t: i64,
    start: i64,
    nz: Noise,
) -> Vec<NodeSample> {
    let mut out = vec![NodeSample::default(); nodes.len()];
    for vm in vms {
        let Some(i) = nodes.iter().position(|n| n.name == vm.node) else {
            continue;
        };
        if let Some(s) = vm_sample(vm, t, start, nz)
            && s.live()
        {
            out[i].busy += s.cpu * s.vcpus as f64;
            out[i].mem_used += s.mem_host;
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// metrics/export

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

fn push_value(buf: &mut Vec<u8>, v: f64) {
    if v >= 0.0 && v.fract() == 0.0 && v < 9.0e15 {
        push_u64(buf, v as u64);
    } else {
        let _ = write!(buf, "{v}");
    }
}

/// One row: `{"id":ID,"metric":M,"timestamp":T,"type":TY,"value":V}`; `id_prefix` is
/// `{"id":"qemu/101","metric":"` and `ts` the timestamp digits.
#[allow(clippy::too_many_arguments)]
fn push_row(
    buf: &mut Vec<u8>,
    first: &mut bool,
    ts: &[u8],
    id_prefix: &[u8],
    metric: &str,
    v: f64,
    ty: &str,
) {
    if !*first {
        buf.push(b',');
    }
    *first = false;
    buf.extend_from_slice(id_prefix);
    buf.extend_from_slice(metric.as_bytes());
    buf.extend_from_slice(b"\",\"timestamp\":");
    buf.extend_from_slice(ts);
    buf.extend_from_slice(b",\"type\":\"");
    buf.extend_from_slice(ty.as_bytes());
    buf.extend_from_slice(b"\",\"value\":");
    push_value(buf, v);
    buf.push(b'}');
}

/// The whole `{"data":{"data":[...]}}` body, rows sorted by timestamp.
pub(crate) fn export(
    nodes: &[Node],
    vms: &[Vm],
    timestamps: &[i64],
    start: i64,
    nz: Noise,
) -> Vec<u8> {
    let guests_live = vms.len();
    let mut buf =
        Vec::with_capacity(64 + timestamps.len() * (guests_live * 10 + nodes.len() * 10) * 90);
    buf.extend_from_slice(b"{\"data\":{\"data\":[");
    let mut first = true;
    let prefix = |id: String| format!("{{\"id\":\"{id}\",\"metric\":\"").into_bytes();
    let node_ids: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| prefix(format!("node/{}", n.name)))
        .collect();
    let vm_ids: Vec<Vec<u8>> = vms
        .iter()
        .map(|v| prefix(format!("{}/{}", v.kind.as_str(), v.vmid)))
        .collect();
    let node_of: Vec<Option<usize>> = vms
        .iter()
        .map(|v| nodes.iter().position(|n| n.name == v.node))
        .collect();
    let online: Vec<bool> = vms
        .iter()
        .map(|v| nodes.iter().any(|n| n.name == v.node && n.online))
        .collect();
    for &t in timestamps {
        let ts_s = t.to_string();
        let ts = ts_s.as_bytes();
        let mut totals = vec![NodeSample::default(); nodes.len()];
        for (i, vm) in vms.iter().enumerate() {
            if !online[i] || vm.status == VmStatus::Unknown {
                continue;
            }
            let Some(s) = vm_sample(vm, t, start, nz) else {
                continue;
            };
            if s.status == VmStatus::Unknown {
                continue;
            }
            let id = &vm_ids[i];
            if let Some(n) = node_of[i]
                && s.live()
            {
                totals[n].busy += s.cpu * s.vcpus as f64;
                totals[n].mem_used += s.mem_host;
            }
            if s.live() && !s.blind {
                push_row(&mut buf, &mut first, ts, id, "cpu_current", s.cpu, "gauge");
            }
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "cpu_max",
                s.vcpus as f64,
                "gauge",
            );
            if s.live() && !s.blind {
                push_row(
                    &mut buf,
                    &mut first,
                    ts,
                    id,
                    "mem_used",
                    s.mem_used as f64,
                    "gauge",
                );
            }
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "mem_total",
                s.mem_total as f64,
                "gauge",
            );
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "disk_total",
                vm.maxdisk as f64,
                "gauge",
            );
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "uptime",
                s.uptime as f64,
                "gauge",
            );
            if s.live() {
                push_row(
                    &mut buf,
                    &mut first,
                    ts,
                    id,
                    "disk_read",
                    s.diskread as f64,
                    "derive",
                );
                push_row(
                    &mut buf,
                    &mut first,
                    ts,
                    id,
                    "disk_write",
                    s.diskwrite as f64,
                    "derive",
                );
                push_row(
                    &mut buf,
                    &mut first,
                    ts,
                    id,
                    "net_in",
                    s.netin as f64,
                    "derive",
                );
                push_row(
                    &mut buf,
                    &mut first,
                    ts,
                    id,
                    "net_out",
                    s.netout as f64,
                    "derive",
                );
            }
        }
        for (n, node) in nodes.iter().enumerate() {
            if !node.online {
                continue;
            }
            let id = &node_ids[n];
            let ns = &totals[n];
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "cpu_current",
                node_cpu(node, ns),
                "gauge",
            );
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "cpu_max",
                node.cpus as f64,
                "gauge",
            );
            push_row(&mut buf, &mut first, ts, id, "cpu_iowait", 0.001, "gauge");
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "mem_total",
                (node.memory_mib << 20) as f64,
                "gauge",
            );
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "mem_used",
                node_mem_used(node, ns) as f64,
                "gauge",
            );
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "swap_total",
                (8u64 << 30) as f64,
                "gauge",
            );
            push_row(&mut buf, &mut first, ts, id, "swap_used", 0.0, "gauge");
            push_row(
                &mut buf,
                &mut first,
                ts,
                id,
                "uptime",
                (t - start + 40 * 86400).max(0) as f64,
                "gauge",
            );
        }
    }
    buf.extend_from_slice(b"]}}");
    buf
}

// ------------------------------------------------------------------------------------------
// rrddata

/// (step seconds, number of points) for a timeframe.
pub(crate) fn rrd_layout(version: Version, timeframe: &str) -> (i64, usize) {
    if version.is_pve9() {
        match timeframe {
            "hour" => (60, 60),
            "day" => (60, 1440),
            "week" => (1800, 336),
            "month" => (1800, 1440),
            _ => (21600, 1460),
        }
    } else {
        match timeframe {
            "hour" => (60, 70),
            "day" => (1800, 70),
            "week" => (10800, 70),
            "month" => (43200, 70),
            _ => (604800, 70),
        }
    }
}

fn put(m: &mut Map<String, Value>, k: &str, v: f64) {
    if let Some(n) = serde_json::Number::from_f64(v) {
        m.insert(k.to_string(), Value::Number(n));
    }
}

/// RRD points of a guest, oldest first; fields omitted where unknown.
pub(crate) fn rrddata(
    vm: &Vm,
    now: i64,
    start: i64,
    version: Version,
    timeframe: &str,
    max_cf: bool,
    nz: Noise,
) -> Vec<Value> {
    let (step, count) = rrd_layout(version, timeframe);
    let last = now.div_euclid(step) * step;
    let subs = (step / 10).clamp(1, 60);
    let mut out = Vec::with_capacity(count);
    for i in (0..count as i64).rev() {
        let t = last - i * step;
        let mut m = Map::new();
        m.insert("time".into(), Value::from(t));
        let mut known: Vec<Sample> = Vec::with_capacity(subs as usize);
        for k in 0..subs {
            let ts = t - step + (k + 1) * step / subs;
            if let Some(s) = vm_sample(vm, ts, start, nz)
                && s.live()
                && !s.blind
            {
                known.push(s);
            }
        }
        if (known.len() as i64) * 2 >= subs && !known.is_empty() {
            let agg = |f: &dyn Fn(&Sample) -> f64| -> f64 {
                if max_cf {
                    known.iter().map(f).fold(f64::MIN, f64::max)
                } else {
                    known.iter().map(f).sum::<f64>() / known.len() as f64
                }
            };
            put(&mut m, "cpu", agg(&|s| s.cpu));
            put(&mut m, "maxcpu", agg(&|s| s.vcpus as f64));
            put(&mut m, "mem", agg(&|s| s.mem_used as f64));
            put(&mut m, "maxmem", agg(&|s| s.mem_total as f64));
            put(&mut m, "disk", 0.0);
            put(&mut m, "maxdisk", vm.maxdisk as f64);
            put(&mut m, "netin", agg(&|s| s.net_rate));
            put(&mut m, "netout", agg(&|s| s.net_rate * 0.6));
            put(&mut m, "diskread", agg(&|s| s.disk_rate));
            put(&mut m, "diskwrite", agg(&|s| s.disk_rate * 0.4));
            if version.is_pve9() {
                put(&mut m, "memhost", agg(&|s| s.mem_host as f64));
                // Percent, as pvestatd stores the kernel's avg10.
                put(&mut m, "pressurecpusome", agg(&|s| s.cpu_pressure * 100.0));
                put(&mut m, "pressurecpufull", agg(&|s| s.cpu_pressure * 50.0));
                put(&mut m, "pressureiosome", 0.0);
                put(&mut m, "pressureiofull", 0.0);
                put(
                    &mut m,
                    "pressurememorysome",
                    agg(&|s| s.mem_pressure * 100.0),
                );
                put(
                    &mut m,
                    "pressurememoryfull",
                    agg(&|s| s.mem_pressure * 50.0),
                );
            }
        }
        out.push(Value::Object(m));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_bounded_and_deterministic() {
        for t in 0..1000 {
            let a = noise(7, 101, t, 1);
            assert!((-1.0..=1.0).contains(&a));
            assert_eq!(a, noise(7, 101, t, 1));
        }
    }
}
