//! The container endpoints, `/nodes/{node}/lxc/{vmid}/...`, as pve-container answers them
//! (FIDELITY.md, "Containers"): status/current, config (with `current`), pending, rrddata, and
//! the synchronous config PUT that changes a running container's cgroup at once.

use super::*;

/// `/nodes/{node}/lxc/{vmid}/{sub}`.
pub(super) fn route(
    ctx: &Ctx<'_>,
    world: &mut MutexGuard<'_, World>,
    p: &Principal,
    node: &str,
    vmid_s: &str,
    sub: &[&str],
    params: Params,
) -> ApiResult {
    let v = world.version;
    let vmpath = format!("/vms/{vmid_s}");
    let vmid: u32 = vmid_s.parse().unwrap_or(0);
    let base = |k: &str| match k {
        "node" => Some((PType::Node, false)),
        "vmid" => Some((PType::Vmid, false)),
        _ => None,
    };
    if ctx.method == "GET" && !p.privs.has(&vmpath, "VM.Audit") {
        return Err(ApiError::perm(&vmpath, "VM.Audit"));
    }
    let Some(ct) = world
        .vms
        .get(&vmid)
        .filter(|vm| vm.node == node && vm.kind == Kind::Lxc)
        .cloned()
    else {
        return Err(missing_ct_conf(node, vmid_s));
    };
    match (ctx.method, sub) {
        ("GET", ["status", "current"]) => {
            validate(&params, &base, &["node", "vmid"], v)?;
            let mut r = json!({ "vmid": ct.vmid, "type": "lxc", "ha": { "managed": 0 } });
            vm_status_fields(world, &ct, &mut r, false);
            r["swap"] = json!(0);
            let swap: u64 = ct
                .conf
                .get("swap")
                .and_then(|s| s.parse().ok())
                .unwrap_or(512);
            r["maxswap"] = json!(swap << 20);
            ok(r)
        }
        ("GET", ["config"]) => {
            let spec = |k: &str| match k {
                "current" => Some((PType::Bool, true)),
                "snapshot" => Some((PType::Str { max_len: Some(40) }, true)),
                other => base(other),
            };
            validate(&params, &spec, &["node", "vmid"], v)?;
            ok(config_json(&ct, params.flag("current"), v))
        }
        ("GET", ["pending"]) => {
            validate(&params, &base, &["node", "vmid"], v)?;
            ok(pending_json(&ct, v))
        }
        ("GET", ["rrddata"]) => {
            let spec = |k: &str| match k {
                "timeframe" => Some((
                    PType::Enum(&["hour", "day", "week", "month", "year"]),
                    false,
                )),
                "cf" => Some((PType::Enum(&["AVERAGE", "MAX"]), true)),
                other => base(other),
            };
            validate(&params, &spec, &["node", "vmid", "timeframe"], v)?;
            let (now, start, noise) = (world.now(), world.start, world.noise);
            let tf = params.get("timeframe").unwrap_or("hour").to_string();
            let max_cf = params.get("cf") == Some("MAX");
            Ok(Body::Later(Box::new(move || {
                Value::Array(metrics::rrddata(&ct, now, start, v, &tf, max_cf, noise))
            })))
        }
        ("PUT", ["config"]) => update(world, p, &vmpath, vmid, &params, v),
        _ => Err(ApiError::no_method(ctx.method, ctx.path)),
    }
}

/// pve-container's text for a container that is not on this node (LXC/Config.pm
/// `load_config` via AbstractConfig `cfs_config_path`: `nodes/{node}/lxc/{vmid}.conf`).
fn missing_ct_conf(node: &str, vmid: &str) -> ApiError {
    ApiError::new(
        500,
        format!("Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"),
    )
}

/// The keys a container's PUT takes here, with their schema (LXC/Config.pm `$confdesc`).
fn key_type(key: &str) -> Option<PType> {
    match key {
        "cores" => Some(PType::Int {
            min: Some(1),
            max: Some(8192),
        }),
        "memory" => Some(PType::Int {
            min: Some(16),
            max: None,
        }),
        "swap" => Some(PType::Int {
            min: Some(0),
            max: None,
        }),
        "digest" => Some(PType::Str { max_len: Some(40) }),
        "delete" | "revert" => Some(PType::ConfigIdList),
        _ => None,
    }
}

/// `PUT /nodes/{node}/lxc/{vmid}/config` (API2/LXC/Config.pm `update_vm`): checks the digest
/// under the config lock, then `update_pct_config` on the running container — `cores` goes
/// into the config (pvestatd enacts the cpuset within ~10 s; here at once), `memory`/`swap`
/// into the cgroup at once (memory.max: below what the container uses, the kernel reclaims
/// and OOM-kills inside, and the call still succeeds). Returns null: no task.
fn update(
    world: &mut MutexGuard<'_, World>,
    p: &Principal,
    vmpath: &str,
    vmid: u32,
    params: &Params,
    v: Version,
) -> ApiResult {
    let spec = |k: &str| match k {
        "node" => Some((PType::Node, false)),
        "vmid" => Some((PType::Vmid, false)),
        other => key_type(other).map(|t| (t, true)),
    };
    validate(params, &spec, &["node", "vmid"], v)?;
    let sets: Vec<(&str, &str)> = params
        .list
        .iter()
        .map(|(k, val)| (k.as_str(), val.as_str()))
        .filter(|(k, _)| !matches!(*k, "node" | "vmid" | "digest" | "delete" | "revert"))
        .collect();
    // LXC.pm check_ct_modify_config_perm.
    for (key, _) in &sets {
        let needed = if *key == "cores" {
            "VM.Config.CPU"
        } else {
            "VM.Config.Memory"
        };
        if !p.privs.has(vmpath, needed) {
            return Err(ApiError::perm(vmpath, needed));
        }
    }
    let (now, start, noise) = (world.now(), world.start, world.noise);
    let Some(ct) = world.vms.get_mut(&vmid) else {
        return Err(ApiError::new(500, "container vanished"));
    };
    if let Some(d) = params.get("digest").filter(|d| !d.is_empty())
        && *d != ct.digest
    {
        // pve-common PVE/Tools.pm assert_if_modified (shared with qemu-server's PUT).
        return Err(ApiError::new(
            500,
            "detected modified configuration - file changed by other user? Try again.",
        ));
    }
    if let Some(lock) = ct.lock() {
        return Err(ApiError::new(500, format!("CT is locked ({lock})")));
    }
    for key in config::split_list(params.get("revert").unwrap_or("")) {
        ct.pending.remove(&key);
        ct.pending_delete.remove(&key);
    }
    // Running or not, these keys end in the config at once (hotplugged, or applied to the
    // config of a stopped container by `vmconfig_apply_pending`).
    for (key, value) in sets {
        ct.conf.insert(key.to_string(), value.to_string());
    }
    if ct.status.is_live() {
        count_oom_kills(ct, now, start, noise);
    }
    ct.touch(now);
    ok(Value::Null)
}

/// Memory now below what the container uses: the kernel's OOM killer fires inside it.
fn count_oom_kills(ct: &mut Vm, now: i64, start: i64, noise: Noise) {
    let used = metrics::vm_demand(ct, now, start, noise).memory_mib;
    if used > ct.mem_mib() as f64 {
        ct.oom_kills += 1;
    }
}
