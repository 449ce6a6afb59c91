//! The demo: pvescale's real pipeline against a simulated Proxmox VE cluster.
//!
//! `cargo run --example demo [-- --minutes 45]`
//!
//! Starts the simulated cluster (HTTPS on 127.0.0.1, its own CA), writes a config for it in
//! a temporary directory, then runs one `pvescale run` pass per simulated minute and prints
//! what changed and why. Ends with the `pvescale status` table.

use std::time::Duration;

use pvescale::engine::Mode;
use pvescale::report::{self, RunReport};
use pvesim::{NodeSpec, Pattern, Privs, Sim, VmSpec};

const TOKEN: &str = "pvescale@pve!autoscale";
const SECRET: &str = "demo-secret-not-a-real-one";
const MINUTE: i64 = 60;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let minutes: u32 = std::env::args()
        .skip_while(|a| a != "--minutes")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(45);
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
    for minute in 1..=minutes {
        sim.advance(Duration::from_secs(60));
        let report = pvescale::commands::run::pass(&config, Mode::Apply, sim.now() as u64)?;
        print_minute(minute, &report);
    }
    println!("\n`pvescale status` at the end:\n");
    let status = pvescale::commands::run::pass(&config, Mode::Status, sim.now() as u64)?;
    print!("{}", report::render_status(&status));
    let writes = sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/config"))
        .count();
    println!(
        "\n{} API requests in all, {writes} config writes; nothing left pending on any VM: {}",
        sim.requests().len(),
        sim.vms().iter().all(|vm| !vm.has_pending())
    );
    Ok(())
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
                let unit = if what == "cpu" { "vCPUs" } else { "MiB" };
                println!(
                    "min {minute:>2}  {:<7} {what:<6} {} {} → {} {unit:<5}  [{outcome}]  {}",
                    vm.name,
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
