//! The demo: pvescale's real pipeline against a simulated Proxmox VE cluster.
//!
//! `cargo run --example demo [-- --minutes 45] [--chart docs/demo-web.svg]`
//!
//! Starts the simulated cluster (HTTPS on 127.0.0.1, its own CA), writes a config for it in
//! a temporary directory, then runs one `pvescale run` pass per simulated minute and prints
//! what changed and why. Ends with the `pvescale status` table; with `--chart FILE`, also
//! writes the chart of `pvescale simulate --vm 101 -o svg` over the demo (the README's
//! picture).

use std::time::Duration;

use pvescale::chart::{Chart, Mark, MarkKind, Panel, Series, Shape};
use pvescale::engine::Mode;
use pvescale::guest::GuestKind;
use pvescale::policy::Resource;
use pvescale::report::{self, RunReport};
use pvesim::{NodeSpec, Pattern, Privs, Sim, VmSpec};

const TOKEN: &str = "pvescale@pve!autoscale";
const SECRET: &str = "demo-secret-not-a-real-one";
const MINUTE: i64 = 60;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let option = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let minutes: u32 = option("--minutes")
        .and_then(|m| m.parse().ok())
        .unwrap_or(45);
    let chart = option("--chart");
    let hotplug = "network,disk,usb,cpu,memory";
    let ready = |vmid: u32, name: &str| {
        VmSpec::new(vmid, "pve1")
            .name(name)
            .sockets(1)
            .cores(8)
            .vcpus(2)
            .memory_mib(2048)
            .numa(true)
            .hotplug(hotplug)
            .tags(&["autoscale"])
    };
    let sim = Sim::builder()
        .version("8.4")
        .node(NodeSpec::new("pve1").cpus(32).memory_mib(131_072))
        .node(NodeSpec::new("pve2").cpus(32).memory_mib(131_072))
        .token(TOKEN, SECRET, Privs::pvescale())
        // A web server: the morning rush from minute 3 to 12, quiet again from minute 25.
        .vm(ready(101, "web").cpu_load(Pattern::Series {
            start: 0,
            step: 3 * MINUTE,
            values: vec![0.6, 1.8, 2.6, 3.4, 3.6, 3.0, 2.2, 1.2, 0.4, 0.3, 0.3],
        }))
        // A database whose working set grows.
        .vm(ready(102, "db")
            .cores(4)
            .mem_load(Pattern::Ramp {
                from: 1200.0,
                to: 5200.0,
                start: 2 * MINUTE,
                end: 20 * MINUTE,
            })
            .cpu_load(Pattern::Constant(0.8)))
        // Oversized and idle: gives back vCPUs and memory after a while.
        .vm(ready(103, "idle")
            .vcpus(6)
            .memory_mib(8192)
            .cpu_load(Pattern::Constant(0.2))
            .mem_load(Pattern::Constant(900.0)))
        // A container (LXC) whose job queue grows: more cores, live, with nothing to enable;
        // its spare memory goes back an eighth at a time, never below use + margin.
        .vm(VmSpec::new(201, "pve2")
            .lxc()
            .name("worker")
            .cores(1)
            .memory_mib(4096)
            .tags(&["autoscale"])
            .cpu_load(Pattern::Ramp {
                from: 0.5,
                to: 2.6,
                start: 4 * MINUTE,
                end: 16 * MINUTE,
            })
            .mem_load(Pattern::Constant(1500.0)))
        // Busy but started without CPU hotplug: pvescale says what to fix instead.
        .vm(VmSpec::new(104, "pve2")
            .name("legacy")
            .cores(2)
            .tags(&["autoscale"])
            .cpu_load(Pattern::Constant(1.9)))
        .start()?;

    let dir = tempfile::tempdir()?;
    let secret_file = dir.path().join("lab.secret");
    std::fs::write(&secret_file, SECRET)?;
    let ca_file = sim.write_ca_file(dir.path())?;
    let config_file = dir.path().join("pvescale.toml");
    std::fs::write(
        &config_file,
        format!(
            r#"state_dir = "{state}"

[[cluster]]
name = "lab"
url = "{url}"
token = "{TOKEN}"
token_secret_file = "{secret}"
ca_file = "{ca}"

[select]
tags = ["autoscale"]
types = ["vm", "ct"]

[policy]
window = "2m"

[policy.cpu]
up_after = "2m"
down_after = "6m"
cooldown_up = "3m"
cooldown_down = "6m"

[policy.memory]
up_after = "1m"
down_after = "10m"
cooldown_up = "2m"
cooldown_down = "10m"
"#,
            state = dir.path().join("state").display(),
            url = sim.url(),
            secret = secret_file.display(),
            ca = ca_file.display(),
        ),
    )?;
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let (config, _warnings) = pvescale::config::load(&config_file)?;

    println!(
        "pvescale demo: simulated Proxmox VE {}.{} at {} (HTTPS, certificate {}...)",
        sim.version().major,
        sim.version().minor,
        sim.url(),
        &sim.fingerprint()[..23]
    );
    println!("one `pvescale run` per simulated minute, {minutes} minutes:\n");
    let mut story = Story::default();
    for minute in 1..=minutes {
        sim.advance(Duration::from_secs(60));
        let report = pvescale::commands::run::pass(&config, Mode::Apply, sim.now() as u64)?;
        print_minute(minute, &report);
        story.add(&report);
    }
    println!("\n`pvescale status` at the end:\n");
    let status = pvescale::commands::run::pass(&config, Mode::Status, sim.now() as u64)?;
    print!("{}", report::render_status(&status));
    let writes = sim
        .requests()
        .iter()
        // Config tasks of VMs, and containers' synchronous config PUTs.
        .filter(|r| {
            r.path.ends_with("/config")
                && (r.method == "POST" || (r.method == "PUT" && r.path.contains("/lxc/")))
        })
        .count();
    println!(
        "\n{} API requests in all, {writes} config writes; nothing left pending on any guest: {}",
        sim.requests().len(),
        sim.vms().iter().all(|vm| !vm.has_pending())
    );
    if let Some(path) = chart {
        std::fs::write(&path, story.chart())?;
        println!("\nthe chart of VM 101 (web): {path}");
    }
    Ok(())
}

/// What the runs saw of VM 101 (the web server) and what they did, minute by minute.
#[derive(Default)]
struct Story {
    busy_cores: Vec<(u64, Option<f64>)>,
    vcpus: Vec<(u64, Option<f64>)>,
    used_mib: Vec<(u64, Option<f64>)>,
    memory_mib: Vec<(u64, Option<f64>)>,
    changes: Vec<(Resource, Mark)>,
}

impl Story {
    fn add(&mut self, report: &RunReport) {
        let Some(vm) = report
            .clusters
            .iter()
            .flat_map(|c| c.vms.iter())
            .find(|vm| vm.vmid == 101)
        else {
            return;
        };
        let t = report.time;
        let size = |r: &report::ResourceReport, before: u64| match (r.applied(), r.to) {
            (true, Some(to)) => to,
            _ => before,
        };
        self.busy_cores
            .push((t, vm.cpu_percent.map(|p| p / 100.0 * vm.vcpus as f64)));
        self.used_mib.push((
            t,
            vm.memory_percent.map(|p| p / 100.0 * vm.memory_mib as f64),
        ));
        self.vcpus.push((t, Some(vm.vcpus as f64)));
        self.memory_mib.push((t, Some(vm.memory_mib as f64)));
        for (resource, r) in vm.resources() {
            if r.applied() {
                self.changes.push((
                    resource,
                    Mark {
                        t,
                        kind: MarkKind::Change,
                        title: r.reason.clone(),
                    },
                ));
            }
        }
        // The size after this run's change, from the same instant on.
        self.vcpus.push((t, Some(size(&vm.cpu, vm.vcpus) as f64)));
        self.memory_mib
            .push((t, Some(size(&vm.memory, vm.memory_mib) as f64)));
    }

    /// The chart: use against allocation, the changes marked with their reasons.
    fn chart(self) -> String {
        let line = |id, label: &str, shape, color, points| Series {
            id,
            label: label.to_string(),
            shape,
            color,
            dashed: false,
            points,
        };
        let marks = |resource: Resource| -> Vec<Mark> {
            self.changes
                .iter()
                .filter(|(r, _)| *r == resource)
                .map(|(_, m)| m.clone())
                .collect()
        };
        let cpu = Panel {
            title: "CPU".into(),
            y_label: "cores / vCPUs".into(),
            series: vec![
                line(
                    "busy_cores",
                    "busy cores (as pvescale saw them)",
                    Shape::Line,
                    "#2563eb",
                    self.busy_cores.clone(),
                ),
                line(
                    "vcpus",
                    "vCPUs (as pvescale set them)",
                    Shape::Step,
                    "#16a34a",
                    self.vcpus.clone(),
                ),
            ],
            marks: marks(Resource::Cpu),
        };
        let memory = Panel {
            title: "Memory".into(),
            y_label: "MiB".into(),
            series: vec![
                line(
                    "used_mib",
                    "used",
                    Shape::Line,
                    "#7c3aed",
                    self.used_mib.clone(),
                ),
                line(
                    "memory_mib",
                    "memory (as pvescale set it)",
                    Shape::Step,
                    "#16a34a",
                    self.memory_mib.clone(),
                ),
            ],
            marks: marks(Resource::Memory),
        };
        pvescale::chart::render(&Chart {
            title: "The demo's web server: the morning rush, answered and given back".into(),
            subtitle: "cargo run --example demo -- --chart docs/demo-web.svg: one pvescale run a \
                       simulated minute; hover a mark for its reason"
                .into(),
            panels: vec![cpu, memory],
            zone: jiff::tz::TimeZone::UTC,
        })
    }
}

/// One line per change, refusal or block that is new this minute.
fn print_minute(minute: u32, report: &RunReport) {
    let mut said = false;
    for cluster in &report.clusters {
        if let Some(error) = &cluster.error {
            println!("min {minute:>2}  cluster {}: {error}", cluster.name);
            said = true;
        }
        for vm in &cluster.vms {
            for (what, r) in [("cpu", &vm.cpu), ("memory", &vm.memory)] {
                let Some(outcome) = &r.outcome else { continue };
                let unit = match (what, vm.kind) {
                    ("cpu", GuestKind::Ct) => "cores",
                    ("cpu", GuestKind::Vm) => "vCPUs",
                    _ => "MiB",
                };
                println!(
                    "min {minute:>2}  {:<7} {what:<6} {} {} → {} {unit:<5}  [{outcome}]  {}",
                    format!("{} {}", vm.kind, vm.name),
                    r.action,
                    r.from.unwrap_or(0),
                    r.to.unwrap_or(0),
                    r.reason
                );
                said = true;
            }
            if minute == 3 && vm.cpu.action == report::ActionKind::Blocked {
                println!("min {minute:>2}  {:<7} {}", vm.name, vm.cpu.reason);
                said = true;
            }
        }
    }
    if !said {
        let s = &report.summary;
        println!("min {minute:>2}  no change ({} VMs managed)", s.managed);
    }
}
