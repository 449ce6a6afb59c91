//! `pvescale check`: is everything ready? Config, state directory, connection, version,
//! authentication, privileges, and each managed VM's live-scaling prerequisites, each with
//! what to do when it is not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{Finished, load_config};
use crate::cli::{CheckArgs, GlobalArgs};
use crate::config::{ClusterConfig, Config, SystemEnv};
use crate::error::{Exit, Failure};
use crate::guest::GuestKind;
use crate::leader::Role;
use crate::metrics::{Source, Window};
use crate::onlining;
use crate::policy::Resource;
use crate::pve::parallel::{DEFAULT_PARALLELISM, map_bounded};
use crate::pve::types::{PendingItem, Version, VmConfig, VmResource, VmStatus};
use crate::pve::{Auth, Client, ClusterTarget};

/// The privileges pvescale needs, and no more.
pub const REQUIRED_PRIVILEGES: [&str; 4] =
    ["VM.Audit", "VM.Config.CPU", "VM.Config.Memory", "Sys.Audit"];

/// What lets pvescale ask the guest agent whether added vCPUs and memory came online
/// (qemu-server API2/Qemu/Agent.pm): `VM.GuestAgent.Audit` on Proxmox VE 9, `VM.Monitor`
/// before. Optional: without it a grow is trusted once Proxmox applied it.
pub const AGENT_PRIVILEGES: [&str; 2] = ["VM.GuestAgent.Audit", "VM.Monitor"];

/// How one cluster fared.
#[derive(Debug, Default)]
struct ClusterCheck {
    usable: bool,
    vms_ready: usize,
    problems: usize,
}

pub fn check(global: &GlobalArgs, args: &CheckArgs) -> Result<Finished, Failure> {
    let config = load_config(global)?;
    if args.notify_test {
        let mut out = String::new();
        let exit = notify_test(&config, &mut out);
        return Ok(Finished { output: out, exit });
    }
    let mut out = String::new();
    let _ = writeln!(out, "config {}: ok", config.path().display());
    let state_dir = config.resolved_state_dir(&SystemEnv);
    let _ = writeln!(
        out,
        "state directory {}: {}",
        state_dir.display(),
        state_dir_status(&state_dir)
    );
    if let Some(line) = schedules_status(&config, crate::clock::now()) {
        let _ = writeln!(out, "{line}");
    }
    let mut results = Vec::new();
    for cluster in config.clusters() {
        let (text, result) = check_cluster(&config, cluster);
        out.push_str(&text);
        results.push(result);
    }
    let usable = results.iter().filter(|r| r.usable).count();
    let ready: usize = results.iter().map(|r| r.vms_ready).sum();
    let problems: usize = results.iter().map(|r| r.problems).sum();
    let exit = if usable == 0 || ready == 0 {
        let _ = writeln!(out, "result: nothing can be scaled yet (see above)");
        Exit::Runtime
    } else if problems > 0 {
        let _ = writeln!(
            out,
            "result: ready, with {problems} problems to look at (see above)"
        );
        Exit::Partial
    } else {
        let _ = writeln!(out, "result: ready");
        Exit::Ok
    };
    Ok(Finished { output: out, exit })
}

/// `check --notify-test`: a test message on every channel; exit 0 when all took it.
fn notify_test(config: &Config, out: &mut String) -> Exit {
    let channels = crate::notify::channels(config.notify());
    if channels.is_empty() {
        let _ = writeln!(
            out,
            "notifications: no channel is configured ([notify.email], [notify.gotify] or \
             [[notify.webhook]] in {})",
            config.path().display()
        );
        return Exit::Runtime;
    }
    let results = crate::notify::send_test(config.notify(), crate::clock::now());
    let mut failed = 0;
    for r in &results {
        match &r.error {
            None => {
                let _ = writeln!(out, "{}: ok, test message sent", r.channel);
            }
            Some(e) => {
                failed += 1;
                let _ = writeln!(out, "{}: FAILED ({} attempts): {e}", r.channel, r.attempts);
            }
        }
    }
    if failed == 0 {
        let _ = writeln!(out, "result: every notification channel works");
        Exit::Ok
    } else {
        let _ = writeln!(
            out,
            "result: {failed} of {} notification channels failed",
            results.len()
        );
        Exit::Runtime
    }
}

/// `schedules: 2, local time Europe/Berlin; in force now: "backup" (...) until 05:00`.
fn schedules_status(config: &Config, now: u64) -> Option<String> {
    let schedules = config.schedules();
    if schedules.is_empty() {
        return None;
    }
    let (zone, zone_text) = match crate::schedule::local_zone() {
        Ok(zone) => {
            let name = zone
                .iana_name()
                .unwrap_or("from /etc/localtime")
                .to_string();
            (zone, format!("local time {name}"))
        }
        Err(e) => (
            jiff::tz::TimeZone::UTC,
            format!("PROBLEM: {e}; windows without timezone are read in UTC"),
        ),
    };
    let in_force: Vec<String> = schedules
        .iter()
        .filter_map(|s| s.in_force(now, &zone))
        .map(|w| format!("{} until {}", w.label(), w.until_local))
        .collect();
    let now_text = if in_force.is_empty() {
        "none in force now".to_string()
    } else {
        format!("in force now: {}", in_force.join("; "))
    };
    Some(format!(
        "schedules: {}, {zone_text}; {now_text}",
        schedules.len()
    ))
}

fn state_dir_status(dir: &std::path::Path) -> String {
    let guard = crate::fs_guard::Guard::current();
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if let Ok(Some(problem)) = guard.private_dir_problem(dir) {
                return format!("REFUSED: {problem}; only the user pvescale runs as may write it");
            }
            // A probe under a fresh random name, created exclusively (never through a link).
            match crate::atomic_file::prepare(&dir.join(".pvescale-check"), b"", 0o600) {
                Ok(probe) => {
                    let _ = std::fs::remove_file(probe.temp_path());
                    "ok (writable)".to_string()
                }
                Err(e) => {
                    format!(
                        "NOT WRITABLE ({e:#}): run as a user that can write it, or set state_dir"
                    )
                }
            }
        }
        Ok(_) => "NOT A DIRECTORY".to_string(),
        Err(_) => "does not exist yet (the first run creates it)".to_string(),
    }
}

fn check_cluster(config: &Config, cluster: &ClusterConfig) -> (String, ClusterCheck) {
    let mut out = String::new();
    let mut result = ClusterCheck::default();
    let target = cluster.target_ref();
    let _ = writeln!(
        out,
        "\ncluster {} ({}):",
        cluster.name(),
        target.urls.join(", ")
    );
    let Some((client, version)) = connect(target, &mut out) else {
        return (out, result);
    };
    result.problems += privileges(&client, &mut out);
    out.push_str(&metrics_plan(config, &version));
    let resources = match client.resources() {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(out, "  cluster/resources: FAILED: {e}");
            return (out, result);
        }
    };
    result.usable = true;
    match crate::engine::role_here(cluster, &client, &resources, crate::clock::now()) {
        Ok(None) => {}
        Ok(Some(Role::Active { why })) => {
            let _ = writeln!(out, "  active scaler: this node ({why})");
        }
        Ok(Some(Role::Standby { active, why })) => {
            let _ = writeln!(
                out,
                "  active scaler: {active} ({why}); runs here do nothing (active = \"auto\")"
            );
        }
        Ok(Some(Role::NoQuorum)) => {
            let _ = writeln!(out, "  active scaler: none: the cluster has no quorum");
            result.problems += 1;
        }
        Err(e) => {
            let _ = writeln!(out, "  active scaler: cannot tell ({e})");
            result.problems += 1;
        }
    }
    let managed: Vec<&VmResource> = resources
        .vms
        .iter()
        .filter(|vm| config.manages(vm.kind, vm.vmid, &vm.tags, vm.pool.as_deref()))
        .collect();
    result.problems += selection(config, &managed, &resources.vms, &mut out);
    let (ready, problems) = vms_readiness(config, &client, &managed, &mut out);
    result.vms_ready += ready;
    result.problems += problems;
    (out, result)
}

/// Connects and authenticates (one `version` call); says how, or why not.
fn connect(target: &ClusterTarget, out: &mut String) -> Option<(Client, Version)> {
    let client = match Client::new(target) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "  connection: FAILED: {e}");
            return None;
        }
    };
    for warning in client.warnings() {
        let _ = writeln!(out, "  WARNING: {warning}");
    }
    let version = match client.version() {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(out, "  connection and authentication: FAILED: {e}");
            return None;
        }
    };
    let auth = match &target.auth {
        Auth::Token { id, .. } => format!("API token {id}"),
        Auth::Password { user, .. } => format!("user {user} (ticket)"),
    };
    let _ = writeln!(
        out,
        "  connection: ok, Proxmox VE {} ({})",
        version.version, version.release
    );
    let _ = writeln!(out, "  authentication: ok, {auth}");
    Some((client, version))
}

/// The token's privileges against what pvescale needs; returns the problems found.
fn privileges(client: &Client, out: &mut String) -> usize {
    match client.permissions() {
        Ok(perms) => {
            let (text, missing) = privilege_report(&perms);
            out.push_str(&text);
            missing
        }
        Err(e) => {
            let _ = writeln!(out, "  privileges: could not be read ({e})");
            1
        }
    }
}

/// Which VMs are managed, and selected VMs the token cannot see; returns the problems.
fn selection(
    config: &Config,
    managed: &[&VmResource],
    visible: &[VmResource],
    out: &mut String,
) -> usize {
    let mut problems = 0;
    let _ = writeln!(out, "  managed VMs: {}", managed.len());
    if managed.is_empty() {
        let _ = writeln!(
            out,
            "    none: check [select] (tags, vmids, pools), and that the token has VM.Audit \
             (VMs it cannot see are silently missing)"
        );
        problems += 1;
    }
    for vmid in config.selection().vmids() {
        if !visible.iter().any(|vm| vm.vmid == *vmid) {
            let _ = writeln!(
                out,
                "    VM {vmid}: NOT VISIBLE: it does not exist, or the token lacks VM.Audit on /vms/{vmid}"
            );
            problems += 1;
        }
    }
    problems
}

/// Each managed VM's readiness (its config and pending changes, read in parallel); returns
/// (VMs ready, problems).
fn vms_readiness(
    config: &Config,
    client: &Client,
    managed: &[&VmResource],
    out: &mut String,
) -> (usize, usize) {
    let (mut ready, mut problems) = (0, 0);
    let reads = map_bounded(managed, DEFAULT_PARALLELISM, |vm| {
        let config = client.guest_config_current(vm.kind, &vm.node, vm.vmid)?;
        let pending = client.guest_pending(vm.kind, &vm.node, vm.vmid)?;
        let agent =
            (vm.kind == GuestKind::Vm && config.agent_enabled() && vm.status == VmStatus::Running)
                .then(|| guest_agent_line(client, vm));
        Ok::<_, crate::pve::ApiError>((config, pending, agent))
    });
    for (vm, read) in managed.iter().zip(reads) {
        let policy = config.policy_for(vm.kind, vm.vmid, &vm.tags, vm.pool.as_deref());
        match read {
            Ok((vm_config, pending, agent)) => {
                let verdict = vm_readiness(
                    vm,
                    &vm_config,
                    &pending,
                    policy.cpu.enabled,
                    policy.memory.enabled,
                );
                out.push_str(&verdict.text);
                if let Some(agent) = agent {
                    let _ = writeln!(out, "      guest agent: {agent}");
                }
                if verdict.ready {
                    ready += 1;
                } else {
                    problems += 1;
                }
            }
            Err(e) => {
                let _ = writeln!(out, "    VM {}: config could not be read: {e}", vm.vmid);
                problems += 1;
            }
        }
    }
    (ready, problems)
}

/// Where a run will read metrics from, and over which window when the policy's is too short
/// for the source's points.
fn metrics_plan(config: &Config, version: &Version) -> String {
    let policy = config.policy();
    let window = |source| Window::for_source(source, policy.window, policy.min_samples);
    let with_note = |w: Window| w.note().map(|n| format!("; {n}")).unwrap_or_default();
    let mut out = String::new();
    if version.has_metrics_export() {
        let _ = writeln!(
            out,
            "  metrics: cluster/metrics/export (one call per run){}",
            with_note(window(Source::Export))
        );
        if let Some(note) = window(Source::Rrddata).note() {
            let _ = writeln!(
                out,
                "    VMs of a node missing from the export are read through rrddata: {note}"
            );
        }
    } else {
        let shown = if version.version.is_empty() {
            &version.release
        } else {
            &version.version
        };
        let _ = writeln!(
            out,
            "  metrics: rrddata per VM (Proxmox VE {shown} has no cluster/metrics/export; \
             8.2.5 and later have){}",
            with_note(window(Source::Rrddata))
        );
    }
    out
}

/// Which required privileges are missing and which extra ones the token has.
fn privilege_report(
    perms: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
) -> (String, usize) {
    // The values are propagate flags (pve-access-control `get_effective_permissions`): a
    // privilege listed with 0 is granted on that path only, not below it.
    let flag = |path: &str, privilege: &str| -> Option<bool> {
        let value = perms.get(path)?.get(privilege)?;
        Some(value.as_u64() != Some(0) && value.as_bool() != Some(false) && value != "0")
    };
    let mut out = String::new();
    let mut missing = Vec::new();
    for privilege in REQUIRED_PRIVILEGES {
        // VM privileges may be granted on /, /vms (both must propagate to reach a VM), one
        // VM or a pool (then they cover only those VMs); Sys.Audit is needed on / itself for
        // metrics/export.
        let ok = if privilege.starts_with("VM.") {
            perms.keys().any(|path| match flag(path, privilege) {
                None => false,
                Some(propagates) => {
                    path.starts_with("/vms/")
                        || path.starts_with("/pool/")
                        || ((path == "/" || path == "/vms") && propagates)
                }
            })
        } else {
            flag("/", privilege).is_some()
        };
        if !ok {
            missing.push(privilege);
        }
    }
    if missing.is_empty() {
        let _ = writeln!(out, "  privileges: ok ({})", REQUIRED_PRIVILEGES.join(", "));
        if flag("/", "Sys.Audit") == Some(false) {
            let _ = writeln!(
                out,
                "  privileges: note: Sys.Audit on / does not propagate: node figures are hidden \
                 (no host guard); grant it on / with propagation to see them"
            );
        }
    } else {
        let _ = writeln!(
            out,
            "  privileges: MISSING {} on / (grant: pveum acl modify / --tokens '<token id>' --roles PVEScale, \
             with a role holding {})",
            missing.join(", "),
            REQUIRED_PRIVILEGES.join(" ")
        );
    }
    let held = |privilege: &str| perms.values().any(|p| p.contains_key(privilege));
    if !AGENT_PRIVILEGES.iter().any(|p| held(p)) {
        let _ = writeln!(
            out,
            "  privileges: optional: VM.GuestAgent.Audit (Proxmox VE 9; VM.Monitor on 8, which \
             also allows QEMU monitor commands) is not held: a grow of a VM with the guest agent \
             is not confirmed online inside the guest"
        );
    }
    let extra: BTreeSet<&str> = perms
        .values()
        .flat_map(|p| p.keys())
        .map(String::as_str)
        .filter(|p| !REQUIRED_PRIVILEGES.contains(p) && !AGENT_PRIVILEGES.contains(p))
        .collect();
    if !extra.is_empty() {
        let _ = writeln!(
            out,
            "  privileges: WARNING: more than pvescale needs: {} (a token for pvescale should \
             hold only {})",
            extra.into_iter().collect::<Vec<_>>().join(", "),
            REQUIRED_PRIVILEGES.join(", ")
        );
    }
    (out, missing.len())
}

struct Verdict {
    ready: bool,
    text: String,
}

/// Whether CPU and memory can be scaled live, and if not the exact fix.
fn vm_readiness(
    vm: &VmResource,
    config: &VmConfig,
    pending: &[PendingItem],
    cpu_enabled: bool,
    memory_enabled: bool,
) -> Verdict {
    if vm.kind == GuestKind::Ct {
        return ct_readiness(vm, config, cpu_enabled, memory_enabled);
    }
    let mut text = String::new();
    let name = config.name.clone().or(vm.name.clone()).unwrap_or_default();
    let _ = writeln!(
        text,
        "    VM {} {name} (node {}, {}):",
        vm.vmid,
        vm.node,
        vm.status.as_str()
    );
    let mut needs = Needs::default();
    let _ = writeln!(
        text,
        "      cpu: {}",
        cpu_line(config, cpu_enabled, &mut needs)
    );
    let _ = writeln!(
        text,
        "      memory: {}",
        memory_line(config, memory_enabled, &mut needs)
    );
    if let Some(guest) = guest_line(config) {
        let _ = writeln!(text, "      guest: {guest}");
    }
    if let Some(fix) = fix_line(vm.vmid, config, pending, &needs) {
        let _ = writeln!(text, "      fix: {fix}");
    }
    if vm.status != VmStatus::Running {
        let _ = writeln!(
            text,
            "      note: not running; pvescale only scales running VMs"
        );
    }
    let cpu_ok = !cpu_enabled || config.cpu_hotplug();
    let memory_ok = !memory_enabled || (config.memory_hotplug() && config.numa);
    Verdict {
        ready: cpu_ok && memory_ok && (cpu_enabled || memory_enabled),
        text,
    }
}

/// What the guest agent says of the vCPUs and memory online now: one left offline now is
/// the sign of a guest that will not online added ones either.
fn guest_agent_line(client: &Client, vm: &VmResource) -> String {
    let vcpus = match client.agent_vcpus(&vm.node, vm.vmid) {
        Ok(vcpus) => vcpus,
        Err(e) => return onlining::agent_unavailable(&e),
    };
    let online = vcpus.iter().filter(|v| v.online).count();
    let mut said = Vec::new();
    if online < vcpus.len() {
        said.push(format!(
            "{} of {} vCPUs OFFLINE in the guest: added ones will likely stay offline too; {}",
            vcpus.len() - online,
            vcpus.len(),
            onlining::fix_inside_the_guest(Resource::Cpu)
        ));
    }
    let memory = client
        .agent_memory_blocks(&vm.node, vm.vmid)
        .and_then(|blocks| Ok((blocks, client.agent_memory_block_size(&vm.node, vm.vmid)?)));
    match memory {
        Ok((blocks, size)) => {
            let offline = onlining::offline_mib(&blocks, size);
            if offline > 0 {
                said.push(format!(
                    "{offline} MiB of memory OFFLINE in the guest: added memory will likely stay \
                     offline too; {}",
                    onlining::fix_inside_the_guest(Resource::Memory)
                ));
            }
        }
        Err(e) => said.push(onlining::agent_unavailable(&e)),
    }
    if said.is_empty() {
        format!(
            "all {} vCPUs and all memory online; each grow is confirmed online through it",
            vcpus.len()
        )
    } else {
        said.join("; ")
    }
}

/// What the guest itself does with what it is given: a Windows guest never gives it back.
fn guest_line(config: &VmConfig) -> Option<String> {
    config.is_windows().then(|| {
        format!(
            "Windows (ostype {}): grow only; Windows takes vCPUs and memory live but does not \
             unplug them, so pvescale never shrinks it (a restart with a smaller config does)",
            config.ostype.as_deref().unwrap_or("?")
        )
    })
}

/// A container: nothing to enable (pve-container applies `cores` and `memory` to a running
/// one), but say what is limited.
fn ct_readiness(
    vm: &VmResource,
    config: &VmConfig,
    cpu_enabled: bool,
    memory_enabled: bool,
) -> Verdict {
    let mut text = String::new();
    let name = config.name.clone().or(vm.name.clone()).unwrap_or_default();
    let _ = writeln!(
        text,
        "    CT {} {name} (node {}, {}):",
        vm.vmid,
        vm.node,
        vm.status.as_str()
    );
    let cpu = match (cpu_enabled, config.cores) {
        (false, _) => "not managed (cpu.enabled = false)".to_string(),
        (true, Some(cores)) => format!(
            "live: cores {cores} (its cpuset, enacted by pvestatd within ~10 s), at most the node's CPUs"
        ),
        (true, None) => "live: no cores set, it sees all of the node's CPUs; the first change \
                         sets cores"
            .to_string(),
    };
    let memory = if memory_enabled {
        "live: memory.max at once, no DIMM grid; shrinks only on fresh data, above use + \
         memory_margin, an eighth at a time (below use the kernel would OOM-kill inside)"
    } else {
        "not managed (memory.enabled = false)"
    };
    let _ = writeln!(text, "      cpu: {cpu}");
    // pve-container: cpulimit is a quota (cpu.max) on top of the cpuset `cores` gives.
    let capped = config
        .cpulimit
        .filter(|l| *l > 0.0 && config.cores.is_none_or(|c| *l < c as f64));
    if let (true, Some(limit)) = (cpu_enabled, capped) {
        let _ = writeln!(
            text,
            "      cpu: NOTE: cpulimit {limit} caps its CPU time below its cores: more cores \
             give it no more CPU (remove cpulimit: pct set {} --delete cpulimit)",
            vm.vmid
        );
    }
    let _ = writeln!(text, "      memory: {memory}");
    if vm.status != VmStatus::Running {
        let _ = writeln!(
            text,
            "      note: not running; pvescale only scales running containers"
        );
    }
    Verdict {
        ready: cpu_enabled || memory_enabled,
        text,
    }
}

/// What a VM's config lacks for live scaling.
#[derive(Default)]
struct Needs {
    features: Vec<&'static str>,
    numa: bool,
}

fn cpu_line(config: &VmConfig, enabled: bool, needs: &mut Needs) -> String {
    if !enabled {
        "not managed (cpu.enabled = false)".to_string()
    } else if !config.cpu_hotplug() {
        needs.features.push("cpu");
        "NOT live: cpu is not in hotplug".to_string()
    } else if config.vcpus() >= config.max_vcpus() {
        format!(
            "live, but at sockets × cores = {} vCPUs: it can shrink, not grow (raise cores, then a cold restart)",
            config.max_vcpus()
        )
    } else {
        format!(
            "live: {} of {} vCPUs (sockets × cores)",
            config.vcpus(),
            config.max_vcpus()
        )
    }
}

fn memory_line(config: &VmConfig, enabled: bool, needs: &mut Needs) -> String {
    if !enabled {
        return "not managed (memory.enabled = false)".to_string();
    }
    if !config.memory_hotplug() || !config.numa {
        let mut why = Vec::new();
        if !config.memory_hotplug() {
            needs.features.push("memory");
            why.push("memory is not in hotplug");
        }
        if !config.numa {
            needs.numa = true;
            why.push("numa is off");
        }
        return format!("NOT live: {}", why.join(" and "));
    }
    if config.memory.is_some_and(|m| m < 1024) {
        return "NOT live: memory hotplug needs at least 1024 MiB".to_string();
    }
    let balloon = match config.balloon {
        Some(0) => {
            "; no balloon device: the memory figure is a host-side estimate, so memory is never shrunk"
        }
        _ => "",
    };
    format!("live: {} MiB{balloon}", config.memory.unwrap_or(0))
}

/// The exact fix, or that it is already pending and needs a cold restart.
fn fix_line(
    vmid: u32,
    config: &VmConfig,
    pending: &[PendingItem],
    needs: &Needs,
) -> Option<String> {
    if needs.features.is_empty() && !needs.numa {
        return None;
    }
    let restart = format!("(qm shutdown {vmid} && qm start {vmid})");
    let waiting: Vec<&str> = pending
        .iter()
        .filter(|p| p.is_pending() && (p.key == "hotplug" || p.key == "numa"))
        .map(|p| p.key.as_str())
        .collect();
    if !waiting.is_empty() {
        return Some(format!(
            "{} already changed and pending: a cold restart applies it {restart}",
            waiting.join(" and ")
        ));
    }
    let features = config.hotplug_features();
    let cmd = crate::policy::readiness::fix_command(
        vmid,
        Some(&features),
        &needs.features,
        needs.numa || !config.numa,
    );
    Some(format!("{cmd}, then a cold restart {restart}"))
}
