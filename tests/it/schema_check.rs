//! Every request the client makes uses only parameters that Proxmox VE's official API schema
//! defines for that endpoint, with values valid for their type.
//!
//! The schema is read from `../shared/pve-api/schema.json` (and `schema-extras.json`) beside
//! the project, or from `$PVESCALE_SCHEMA_DIR`; it is never copied into the project (see
//! `pvesim::schema`). Without it the checks print a `SKIPPED:` line on stderr and return, and
//! with `PVESCALE_REQUIRE_SCHEMA=1` (CI) `the_schema_is_there_where_required` fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::common::{TOKEN_ID, TOKEN_SECRET, cluster, ready_vm, wait_task};
use pvescale::pve::types::{Consolidation, Timeframe};
use pvescale::pve::{Auth, Client, ClusterTarget, RetryPolicy, TaskOutcome, TlsMode};
use pvescale::secret::Secret;
use pvesim::{Privs, Recorded, Sim, VmSpec};
use serde_json::Value;

const NODE: &str = "pve1";

/// One endpoint of a schema file: `GET /nodes/{node}/qemu/{vmid}/config` and its definition.
struct Endpoint {
    key: String,
    method: String,
    segments: Vec<String>,
    parameters: Value,
}

impl Endpoint {
    /// Path parameters (`{node}` → `pve1`) if this endpoint matches the request.
    fn matches(&self, method: &str, path: &str) -> Option<Vec<(String, String)>> {
        if self.method != method {
            return None;
        }
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (template, actual) in self.segments.iter().zip(&parts) {
            match template.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name) => params.push((name.to_string(), actual.to_string())),
                None if template == actual => {}
                None => return None,
            }
        }
        Some(params)
    }

    /// Literal (non-parameter) segments, to prefer `/nodes/{node}/status` over a template.
    fn literal_segments(&self) -> usize {
        self.segments.iter().filter(|s| !s.starts_with('{')).count()
    }
}

fn endpoints_of(schema: &Value, source: &str) -> Vec<Endpoint> {
    let Some(map) = schema.get("endpoints").and_then(Value::as_object) else {
        panic!("{source}: no \"endpoints\" object");
    };
    map.iter()
        .map(|(key, def)| {
            let (method, path) = key.split_once(' ').unwrap_or_else(|| {
                panic!("{source}: endpoint key {key:?} is not \"METHOD /path\"")
            });
            Endpoint {
                key: format!("{key} ({source})"),
                method: method.to_string(),
                segments: path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                parameters: def.get("parameters").cloned().unwrap_or(Value::Null),
            }
        })
        .collect()
}

fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::String(s)) => s == "1",
        _ => false,
    }
}

/// The definition of a parameter, also for numbered keys (`net0` → `net[n]`).
fn property<'a>(properties: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(p) = properties.get(name) {
        return Some(p);
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() < name.len() {
        return properties.get(&format!("{base}[n]"));
    }
    None
}

/// Checks `value` against a parameter definition, the way PVE::JSONSchema would.
fn check_value(def: &Value, value: &str) -> Result<(), String> {
    let ty = def.get("type").and_then(Value::as_str).unwrap_or("string");
    let bound = |key: &str| def.get(key).and_then(Value::as_f64);
    match ty {
        "integer" => {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("{value:?} is not an integer"))?;
            if let Some(min) = bound("minimum")
                && (n as f64) < min
            {
                return Err(format!("{n} is below the minimum {min}"));
            }
            if let Some(max) = bound("maximum")
                && (n as f64) > max
            {
                return Err(format!("{n} is above the maximum {max}"));
            }
        }
        "number" => {
            let n: f64 = value
                .parse()
                .map_err(|_| format!("{value:?} is not a number"))?;
            if let Some(min) = bound("minimum")
                && n < min
            {
                return Err(format!("{n} is below the minimum {min}"));
            }
            if let Some(max) = bound("maximum")
                && n > max
            {
                return Err(format!("{n} is above the maximum {max}"));
            }
        }
        "boolean" => {
            if value != "0" && value != "1" {
                return Err(format!("{value:?} is not a boolean (0 or 1)"));
            }
        }
        "string" => {
            if let Some(max) = def.get("maxLength").and_then(Value::as_u64)
                && value.chars().count() as u64 > max
            {
                return Err(format!("longer than maxLength {max}"));
            }
            if def.get("pattern").is_some() {
                return Err("has a pattern, which this test cannot check".to_string());
            }
            match def.get("format") {
                Some(Value::Object(format)) => check_property_string(format, value)?,
                Some(Value::String(format)) => check_format(format, value)?,
                _ => {}
            }
        }
        other => {
            return Err(format!(
                "parameter type {other:?} is not expected in a request"
            ));
        }
    }
    if let Some(list) = def.get("enum").and_then(Value::as_array)
        && !list.iter().any(|v| v.as_str() == Some(value))
    {
        return Err(format!("{value:?} is not one of {list:?}"));
    }
    Ok(())
}

/// A property string such as `memory`: `[current=]N[,key=value...]`.
fn check_property_string(
    format: &serde_json::Map<String, Value>,
    value: &str,
) -> Result<(), String> {
    let default_key = format
        .iter()
        .find(|(_, d)| is_true(d.get("default_key")))
        .map(|(k, _)| k.as_str());
    let mut seen = BTreeSet::new();
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let (key, val) = match part.split_once('=') {
            Some((k, v)) => (k, v),
            None => (
                default_key.ok_or_else(|| format!("{part:?} has no key and no default key"))?,
                part,
            ),
        };
        let sub = format
            .get(key)
            .ok_or_else(|| format!("unknown key {key:?} in property string"))?;
        if !seen.insert(key) {
            return Err(format!("key {key:?} given twice"));
        }
        check_value(sub, val).map_err(|e| format!("{key}: {e}"))?;
    }
    for (key, sub) in format {
        if !is_true(sub.get("optional"))
            && sub.get("default").is_none()
            && !seen.contains(key.as_str())
        {
            return Err(format!("required key {key:?} missing in property string"));
        }
    }
    Ok(())
}

/// The few named formats pvescale's requests use.
fn check_format(format: &str, value: &str) -> Result<(), String> {
    let word = |s: &str| {
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let ok = match format {
        "pve-node" => word(value) && !value.ends_with('-') && value.chars().all(|c| c != '_'),
        "pve-configid" => word(value),
        "pve-configid-list" => value
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .all(word),
        "pve-vmid" => value.parse::<u32>().is_ok_and(|n| n >= 100),
        // Other named formats are not used by pvescale's requests; accept them.
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid {format}"))
    }
}

/// Problems of one recorded request against its endpoint's definition.
fn check_request(
    endpoint: &Endpoint,
    path_params: &[(String, String)],
    r: &Recorded,
) -> Vec<String> {
    let mut problems = Vec::new();
    let empty = serde_json::Map::new();
    let properties = endpoint
        .parameters
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let all: Vec<(&str, &str)> = path_params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(r.query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .chain(r.form.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    let mut seen = BTreeSet::new();
    for (name, value) in &all {
        if !seen.insert(*name) {
            problems.push(format!("parameter {name:?} sent twice"));
            continue;
        }
        match property(properties, name) {
            None => problems.push(format!("parameter {name:?} is not defined")),
            Some(def) => {
                // Passwords are recorded redacted; only their presence is checked.
                if *name == "password" {
                    continue;
                }
                if let Err(e) = check_value(def, value) {
                    problems.push(format!("parameter {name}={value:?}: {e}"));
                }
            }
        }
    }
    for (name, def) in properties {
        if !is_true(def.get("optional")) && !seen.contains(name.as_str()) && !name.contains('[') {
            problems.push(format!("required parameter {name:?} missing"));
        }
    }
    problems
}

fn token_target(sim: &Sim, ca: &Path) -> ClusterTarget {
    ClusterTarget {
        name: "schema".to_string(),
        urls: vec![sim.url().to_string()],
        auth: Auth::Token {
            id: TOKEN_ID.to_string(),
            secret: Secret::new(TOKEN_SECRET),
        },
        tls: TlsMode::CaFile(ca.to_path_buf()),
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        proxy: None,
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(10),
    }
}

/// Drives every typed call pvescale makes (reads, writes, revert, task polling, login).
fn drive(sim: &Sim, ca: &Path) {
    let target = token_target(sim, ca);
    let client = Client::with_retry(&target, retry()).expect("client");
    let wait = |upid: &str| wait_task(&client, upid);
    client.version().expect("version");
    client.resources().expect("resources");
    client.permissions().expect("permissions");
    let start = sim.now() as u64 - 300;
    client
        .metrics_export(start, |_| {})
        .expect("metrics export");
    for (tf, cf) in [
        (Timeframe::Hour, Consolidation::Average),
        (Timeframe::Day, Consolidation::Max),
        (Timeframe::Week, Consolidation::Average),
    ] {
        client.rrddata(NODE, 101, tf, cf).expect("rrddata");
    }
    client.node_status(NODE).expect("node status");
    client.vm_status_current(NODE, 101).expect("status/current");
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    client.vm_pending(NODE, 101).expect("pending");
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[
                ("vcpus", "4".to_string()),
                ("memory", "6144".to_string()),
                ("balloon", "2048".to_string()),
            ],
            &cfg.digest,
        )
        .expect("POST config");
    assert!(matches!(wait(&upid), TaskOutcome::Ok(_)));
    // A change that stays pending, then dropped again.
    let cfg = client.vm_config_current(NODE, 102).expect("config");
    let upid = client
        .vm_config_post(NODE, 102, &[("memory", "4096".to_string())], &cfg.digest)
        .expect("POST config");
    assert!(matches!(wait(&upid), TaskOutcome::Ok(_)));
    let cfg = client.vm_config_current(NODE, 102).expect("config");
    assert!(
        client
            .vm_pending(NODE, 102)
            .expect("pending")
            .iter()
            .any(|p| p.key == "memory" && p.is_pending())
    );
    client
        .vm_revert(NODE, 102, &["memory"], &cfg.digest)
        .expect("revert");
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    client
        .vm_config_put(NODE, 101, &[("vcpus", "3".to_string())], &cfg.digest)
        .expect("PUT config");

    // Ticket login.
    let mut login = token_target(sim, ca);
    login.auth = Auth::Password {
        user: "admin@pam".to_string(),
        password: Secret::new("secret password"),
    };
    let client = Client::with_retry(&login, retry()).expect("client");
    client.version().expect("version via ticket");
}

#[test]
fn the_schema_is_there_where_required() {
    // With PVESCALE_REQUIRE_SCHEMA=1 (CI), the checks below must not skip.
    pvesim::schema::assert_present_where_required();
}

#[test]
fn client_requests_use_only_schema_parameters() {
    let Some(schema) = pvesim::schema::load("schema.json") else {
        pvesim::schema::skipped("the schema check of the client's requests", "schema.json");
        return;
    };
    let mut endpoints = endpoints_of(&schema, "schema.json");
    match pvesim::schema::load("schema-extras.json") {
        Some(extras) => endpoints.extend(endpoints_of(&extras, "schema-extras.json")),
        None => pvesim::schema::skipped(
            "the check of the endpoints in schema-extras.json",
            "schema-extras.json",
        ),
    }

    let sim = cluster()
        .version("9.1")
        .user("admin@pam", "secret password", Privs::all())
        .vm(ready_vm(101, NODE).balloon_mib(1024))
        .vm(VmSpec::new(102, NODE).memory_mib(2048))
        .start()
        .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = sim.write_ca_file(dir.path()).expect("CA file");
    sim.advance(Duration::from_secs(3600));
    drive(&sim, &ca);

    let requests = sim.requests();
    let mut problems: Vec<String> = Vec::new();
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    let mut unchecked: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        if r.status != 200 {
            problems.push(format!(
                "{} {} answered {} (the suite drives only valid calls)",
                r.method, r.path, r.status
            ));
        }
        let best = endpoints
            .iter()
            .filter_map(|e| e.matches(&r.method, &r.path).map(|p| (e, p)))
            .max_by_key(|(e, _)| e.literal_segments());
        match best {
            None => {
                *unchecked
                    .entry(format!("{} {}", r.method, r.path))
                    .or_default() += 1
            }
            Some((endpoint, path_params)) => {
                *checked.entry(endpoint.key.clone()).or_default() += 1;
                for p in check_request(endpoint, &path_params, r) {
                    problems.push(format!("{} {} → {}: {p}", r.method, r.path, endpoint.key));
                }
            }
        }
    }
    println!(
        "checked against the schema ({} requests):",
        checked.values().sum::<usize>()
    );
    for (key, n) in &checked {
        println!("  {n:3} × {key}");
    }
    println!("not in the schema files, unchecked:");
    for (key, n) in &unchecked {
        println!("  {n:3} × {key}");
    }
    assert!(
        problems.is_empty(),
        "requests that do not match the schema:\n  {}",
        problems.join("\n  ")
    );
    // The check ran over every kind of call pvescale makes.
    for expected in [
        "GET /version",
        "GET /cluster/resources",
        "GET /nodes/{node}/status",
        "GET /nodes/{node}/qemu/{vmid}/status/current",
        "GET /nodes/{node}/qemu/{vmid}/rrddata",
        "GET /nodes/{node}/qemu/{vmid}/config",
        "GET /nodes/{node}/qemu/{vmid}/pending",
        "POST /nodes/{node}/qemu/{vmid}/config",
        "PUT /nodes/{node}/qemu/{vmid}/config",
        "GET /nodes/{node}/tasks/{upid}/status",
    ] {
        assert!(
            checked
                .keys()
                .any(|k| k.starts_with(&format!("{expected} ("))),
            "{expected} was not checked; checked: {:?}",
            checked.keys().collect::<Vec<_>>()
        );
    }
    // Only endpoints missing from both files may stay unchecked.
    for key in unchecked.keys() {
        assert!(
            key == "GET /cluster/metrics/export"
                || key == "GET /access/permissions"
                || key == "POST /access/ticket",
            "unexpected unchecked request {key}"
        );
    }
}

#[test]
fn schema_checker_rejects_what_proxmox_rejects() {
    // The checker itself, on the schema's own definitions (skipped like the test above).
    let Some(schema) = pvesim::schema::load("schema.json") else {
        pvesim::schema::skipped("the schema checker's own check", "schema.json");
        return;
    };
    let endpoints = endpoints_of(&schema, "schema.json");
    let post = endpoints
        .iter()
        .find(|e| e.key.starts_with("POST /nodes/{node}/qemu/{vmid}/config "))
        .expect("POST config in the schema");
    let rrd = endpoints
        .iter()
        .find(|e| e.key.starts_with("GET /nodes/{node}/qemu/{vmid}/rrddata "))
        .expect("rrddata in the schema");
    let record =
        |method: &str, path: &str, query: &[(&str, &str)], form: &[(&str, &str)]| Recorded {
            seq: 1,
            conn: 1,
            method: method.to_string(),
            path: path.to_string(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            form: form
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status: 200,
            response_bytes: 0,
            request_bytes: 0,
            auth: pvesim::AuthKind::None,
            csrf_token: false,
            content_type: None,
            fault: None,
            sim_time: 0,
        };
    let check = |e: &Endpoint, r: &Recorded| {
        let params = e.matches(&r.method, &r.path).expect("path matches");
        check_request(e, &params, r)
    };
    let path = "/nodes/pve1/qemu/101/config";
    let good = record(
        "POST",
        path,
        &[],
        &[("vcpus", "2"), ("memory", "current=4096"), ("cores", "4")],
    );
    assert_eq!(check(post, &good), Vec::<String>::new());
    for (form, why) in [
        (vec![("bogus", "1")], "not defined"),
        (vec![("vcpus", "two")], "not an integer"),
        (vec![("vcpus", "0")], "minimum"),
        (vec![("numa", "true")], "boolean"),
        (vec![("memory", "size=4096")], "unknown key"),
        (vec![("memory", "8")], "minimum"),
        (vec![("digest", &"a".repeat(41))], "maxLength"),
        (vec![("revert", "memory,9lives")], "pve-configid-list"),
    ] {
        let r = record("POST", path, &[], &form);
        let problems = check(post, &r);
        assert!(
            problems.iter().any(|p| p.contains(why)),
            "{form:?} should fail with {why:?}: {problems:?}"
        );
    }
    let bad_vmid = record("POST", "/nodes/pve1/qemu/99/config", &[], &[]);
    assert!(!check(post, &bad_vmid).is_empty(), "vmid below 100");
    let rrd_path = "/nodes/pve1/qemu/101/rrddata";
    let ok = record(
        "GET",
        rrd_path,
        &[("timeframe", "hour"), ("cf", "AVERAGE")],
        &[],
    );
    assert!(check(rrd, &ok).is_empty());
    let wrong_cf = record(
        "GET",
        rrd_path,
        &[("timeframe", "hour"), ("cf", "average")],
        &[],
    );
    assert!(
        check(rrd, &wrong_cf)
            .iter()
            .any(|p| p.contains("not one of"))
    );
    let missing = record("GET", rrd_path, &[("cf", "MAX")], &[]);
    assert!(
        check(rrd, &missing)
            .iter()
            .any(|p| p.contains("required parameter \"timeframe\""))
    );
}
