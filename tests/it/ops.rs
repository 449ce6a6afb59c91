//! Operations: the generated man pages and completions are current, the config documentation
//! matches the loader, the metrics file is valid Prometheus text, the history records changes,
//! refusals and failures and `pvescale history` filters them, journald gets one summary line,
//! the systemd units verify and are hardened, and the .deb metadata names files that exist.
//! End-to-end parts run the real binary against the simulated cluster on 127.0.0.1.

#[path = "../../examples/gen-man.rs"]
#[allow(dead_code)]
mod gen_man;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use clap::CommandFactory;
use pvescale::config::doc::SECTIONS;
use pvescale::config::{self, ConfigError, FakeEnv};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---- man pages and completions ------------------------------------------------------------

#[test]
fn committed_man_pages_and_completions_are_current() {
    let mut stale = Vec::new();
    for (path, content) in gen_man::outputs() {
        if fs::read(root().join(path)).ok().as_deref() != Some(content.as_slice()) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files: {stale:?}; run `cargo run --example gen-man` and commit them"
    );
}

#[test]
fn pvescale_1_documents_every_command_option_exit_code_and_variable() {
    let page = gen_man::pvescale_1();
    let cmd = pvescale::cli::Cli::command();
    let mut args: Vec<&clap::Arg> = cmd.get_arguments().collect();
    for sub in cmd.get_subcommands() {
        assert!(
            page.contains(&format!(".SS \"pvescale {}", sub.get_name())),
            "no section for `pvescale {}`",
            sub.get_name()
        );
        args.extend(sub.get_arguments());
    }
    for arg in args {
        if let Some(long) = arg.get_long() {
            // roff escapes '-' as '\-'.
            assert!(
                page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                "--{long} is not in pvescale.1"
            );
        }
    }
    for code in [0, 1, 2, 3, 75, 78] {
        assert!(
            page.contains(&format!(".TP\n\\fB{code}\\fR")),
            "exit code {code}"
        );
    }
    for var in env_vars_read_by_the_code() {
        if var.starts_with("PVESCALE_TOKEN_SECRET_") || var.starts_with("PVESCALE_PASSWORD_") {
            // Per cluster: documented as PVESCALE_TOKEN_SECRET_<NAME>.
            continue;
        }
        assert!(
            page.contains(&var),
            "environment variable {var} is read in src/ but not in pvescale.1"
        );
    }
    for var in ["PVESCALE_TOKEN_SECRET_<NAME>", "PVESCALE_PASSWORD_<NAME>"] {
        assert!(page.contains(var), "{var}");
    }
    for file in ["/etc/pvescale/pvescale.toml", "state.json", "history.jsonl"] {
        assert!(page.contains(file), "{file}");
    }
}

/// `var("X")`, `var_os("X")`, `non_empty_var("X")` in src/, plus the per-cluster prefixes.
fn env_vars_read_by_the_code() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).expect("src readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    let mut vars = BTreeSet::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("readable");
        for call in ["var(\"", "var_os(\""] {
            for (i, _) in text.match_indices(call) {
                let rest = &text[i + call.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if name.len() > 2 && rest[name.len()..].starts_with('"') {
                    vars.insert(name);
                }
            }
        }
    }
    assert!(vars.contains("STATE_DIRECTORY"), "the scan works: {vars:?}");
    vars
}

#[test]
fn pvescale_toml_5_documents_every_key() {
    let page = gen_man::pvescale_toml_5();
    for s in SECTIONS {
        if !s.name.is_empty() {
            assert!(page.contains(&format!(".SH {}", s.name)), "{}", s.name);
        }
        for k in s.keys {
            assert!(
                page.contains(&format!("\\fB{}\\fR", k.name.replace('-', "\\-"))),
                "{} {} not in pvescale.toml.5",
                s.name,
                k.name
            );
        }
    }
}

#[test]
fn completions_cover_every_subcommand() {
    for (path, content) in gen_man::outputs() {
        if !path.starts_with("packaging/completions/") {
            continue;
        }
        let text = String::from_utf8_lossy(&content);
        for sub in ["run", "status", "check", "history", "since", "dry-run"] {
            assert!(text.contains(sub), "{path} lacks {sub}");
        }
    }
}

// ---- the config documentation against the loader ------------------------------------------

const SECRET_ENV: &str = "PVESCALE_TOKEN_SECRET_LAB";

fn env() -> FakeEnv {
    FakeEnv::new().var(SECRET_ENV, "s3cret")
}

const BASE: &str = "[[cluster]]\nname = \"lab\"\nurl = \"https://127.0.0.1:8006\"\n\
                    token = \"pvescale@pve!autoscale\"\n\n[select]\ntags = [\"autoscale\"]\n";

/// A config with `key = value` in `section` (cluster and select keys replace or join BASE's).
fn config_with(section: &str, key: &str, value: &str) -> String {
    // A key BASE already sets (cluster name, url, token; select tags) is replaced.
    let base: String = BASE
        .lines()
        .filter(|l| {
            !matches!(section, "[[cluster]]" | "[select]") || !l.starts_with(&format!("{key} ="))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    match section {
        "" => format!("{key} = {value}\n{base}"),
        "[[cluster]]" | "[select]" => base.replacen(
            &format!("{section}\n"),
            &format!("{section}\n{key} = {value}\n"),
            1,
        ),
        _ => format!("{base}\n{section}\n{key} = {value}\n"),
    }
}

fn load(text: &str) -> Result<pvescale::config::Config, ConfigError> {
    config::parse_str(text, Path::new("/etc/pvescale/pvescale.toml"), &env()).map(|(c, _)| c)
}

#[test]
fn every_documented_key_is_accepted_with_its_example_value() {
    // Unknown keys and values of the wrong type are parse errors; anything else (a combination
    // the example value makes invalid, such as two authentications) is not our question here.
    for s in SECTIONS {
        for k in s.keys {
            let text = config_with(s.name, k.name, k.example);
            if let Err(ConfigError::Parse { problem, .. }) = load(&text) {
                panic!(
                    "{} {} = {} is not accepted: {}\n{text}",
                    s.name, k.name, k.example, problem.message
                );
            }
        }
    }
    // And the check can fail: a key that does not exist is a parse error.
    assert!(matches!(
        load(&config_with("[history]", "max_sise", "\"1MiB\"")),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn documented_defaults_are_the_built_in_ones() {
    let mut text = BASE.to_string();
    for s in SECTIONS {
        if !s.name.starts_with("[policy") && s.name != "[host]" && s.name != "[history]" {
            continue;
        }
        text.push_str(&format!("\n{}\n", s.name));
        for k in s.keys {
            if let Some(default) = k.default_toml {
                text.push_str(&format!("{} = {default}\n", k.name));
            }
        }
    }
    let c = load(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.policy(), &pvescale::policy::Policy::default(), "{text}");
    assert_eq!(c.history_max_size_mib(), 1);
    let default = load(BASE).expect("base loads");
    assert_eq!(default.history_max_size_mib(), 1);
    assert_eq!(default.metrics_file(), None);
    let cluster = SECTIONS
        .iter()
        .find(|s| s.name == "[[cluster]]")
        .expect("cluster section");
    let target = default.clusters()[0].target();
    for (name, want) in [
        ("timeout", target.timeout),
        ("connect_timeout", target.connect_timeout),
    ] {
        let k = cluster
            .keys
            .iter()
            .find(|k| k.name == name)
            .expect("documented");
        let doc = k.default_toml.expect("has a default").trim_matches('"');
        assert_eq!(
            pvescale::units::parse_duration(doc).expect("a duration"),
            want,
            "{name}"
        );
    }
}

#[test]
fn the_example_file_and_the_documentation_name_the_same_keys() {
    let text = read("examples/pvescale.toml");
    // Every documented key is shown, set or commented out, under its table.
    let mut shown: BTreeSet<(String, String)> = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_string();
            continue;
        }
        let l = trimmed.trim_start_matches('#').trim_start();
        let key: String = l
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !key.is_empty() && l[key.len()..].trim_start().starts_with('=') {
            shown.insert((section.clone(), key));
        }
    }
    let documented: BTreeSet<(String, String)> = SECTIONS
        .iter()
        .flat_map(|s| {
            s.keys
                .iter()
                .map(|k| (s.name.to_string(), k.name.to_string()))
        })
        .collect();
    let missing: Vec<_> = documented.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "documented but not in the example: {missing:?}"
    );
    // Every key the example sets is documented.
    fn walk(
        table: &toml::Table,
        path: &str,
        out: &mut BTreeSet<(String, String)>,
        sections: &BTreeSet<String>,
    ) {
        for (key, value) in table {
            let dotted = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match value {
                toml::Value::Table(t) if sections.contains(&format!("[{dotted}]")) => {
                    walk(t, &dotted, out, sections)
                }
                toml::Value::Array(items) if sections.contains(&format!("[[{dotted}]]")) => {
                    for item in items {
                        if let Some(t) = item.as_table() {
                            for k in t.keys() {
                                out.insert((format!("[[{dotted}]]"), k.clone()));
                            }
                        }
                    }
                }
                _ => {
                    let section = if path.is_empty() {
                        String::new()
                    } else {
                        format!("[{path}]")
                    };
                    out.insert((section, key.clone()));
                }
            }
        }
    }
    let sections: BTreeSet<String> = SECTIONS.iter().map(|s| s.name.to_string()).collect();
    let parsed: toml::Table = toml::from_str(&text).expect("the example is TOML");
    let mut set = BTreeSet::new();
    walk(&parsed, "", &mut set, &sections);
    assert!(set.len() > 40, "the walk found the keys: {set:?}");
    let undocumented: Vec<_> = set.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "set in the example but not documented: {undocumented:?}"
    );
}

#[test]
fn metrics_file_and_history_settings() {
    let c = load(&config_with("", "metrics_file", "\"prom/pvescale.prom\"")).expect("loads");
    assert_eq!(
        c.metrics_file(),
        Some(Path::new("/etc/pvescale/prom/pvescale.prom")),
        "relative to the config file"
    );
    let (_, warnings) = config::parse_str(
        &config_with("", "metrics_file", "\"/tmp/pvescale.txt\""),
        Path::new("/etc/pvescale/pvescale.toml"),
        &env(),
    )
    .expect("loads with a warning");
    assert!(
        warnings.iter().any(|w| w.message().contains("*.prom")),
        "{warnings:?}"
    );
    let c = load(&config_with("[history]", "max_size", "\"8MiB\"")).expect("loads");
    assert_eq!(c.history_max_size_mib(), 8);
    let err = load(&config_with("[history]", "max_size", "0")).expect_err("0 is refused");
    assert!(err.to_string().contains("history.max_size"), "{err}");
    let err = load(&config_with("", "metrics_file", "\"\"")).expect_err("empty");
    assert!(err.to_string().contains("metrics_file"), "{err}");
}

#[test]
fn the_packaged_config_loads_once_a_secret_is_provided() {
    let text = read("packaging/pvescale.toml");
    config::parse_str(&text, Path::new("/etc/pvescale/pvescale.toml"), &env())
        .unwrap_or_else(|e| panic!("packaging/pvescale.toml: {e}"));
}

// ---- Prometheus text format -----------------------------------------------------------------

/// A small validator of the Prometheus text exposition format (0.0.4), enough for what a
/// textfile may hold: `# HELP` and `# TYPE` at most once per family and before its samples,
/// the samples of a family together, metric and label names by the spec's patterns, label
/// values quoted with only `\\`, `\"` and `\n` escapes, float values, no duplicate series.
/// Returns every series (`name{a="x",b="y"}` with labels sorted) and its value.
fn parse_prometheus(text: &str) -> Result<BTreeMap<String, f64>, String> {
    fn metric_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn value(s: &str) -> Option<f64> {
        match s {
            "NaN" => Some(f64::NAN),
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            _ => s.parse().ok().filter(|v: &f64| v.is_finite()),
        }
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the text does not end with a line feed".into());
    }
    let mut series = BTreeMap::new();
    let mut help = BTreeSet::new();
    let mut typed = BTreeSet::new();
    let mut sampled = BTreeSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, arg) = (parts.next(), parts.next(), parts.next());
            match (kind, name) {
                (Some("HELP"), Some(name)) => {
                    if !metric_name(name) || !help.insert(name.to_string()) {
                        return Err(at("bad or repeated HELP"));
                    }
                    if sampled.contains(name) {
                        return Err(at("HELP after samples"));
                    }
                }
                (Some("TYPE"), Some(name)) => {
                    let ok = matches!(
                        arg,
                        Some("counter" | "gauge" | "histogram" | "summary" | "untyped")
                    );
                    if !ok || !metric_name(name) || !typed.insert(name.to_string()) {
                        return Err(at("bad or repeated TYPE"));
                    }
                    if sampled.contains(name) {
                        return Err(at("TYPE after samples"));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value"))?;
        let name = &line[..name_end];
        if !metric_name(name) {
            return Err(at("bad metric name"));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(inner) => parse_labels(inner).map_err(|why| at(&why))?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if !rest.starts_with(' ') || fields.is_empty() || fields.len() > 2 {
            return Err(at("expected ' value [timestamp]'"));
        }
        let v = value(fields[0]).ok_or_else(|| at("bad value"))?;
        if fields.len() == 2 && fields[1].parse::<i64>().is_err() {
            return Err(at("bad timestamp"));
        }
        if current.as_deref() != Some(name) {
            if sampled.contains(name) {
                return Err(at("samples of a family are not together"));
            }
            sampled.insert(name.to_string());
            current = Some(name.to_string());
        }
        let key = format!(
            "{name}{{{}}}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        if series.insert(key, v).is_some() {
            return Err(at("duplicate series"));
        }
    }
    Ok(series)
}

/// `a="x",b="y"}rest` → the labels and `rest`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    fn label_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with("__")
    }
    let b = s.as_bytes();
    let mut labels = BTreeMap::new();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'}') {
            return Ok((labels, &s[i + 1..]));
        }
        let start = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        if i >= b.len() {
            return Err("label without '='".into());
        }
        let name = &s[start..i];
        if !label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        i += 1;
        if b.get(i) != Some(&b'"') {
            return Err("label value not quoted".into());
        }
        i += 1;
        let mut value = String::new();
        loop {
            match b.get(i) {
                None => return Err("unterminated label value".into()),
                Some(b'\\') => {
                    match b.get(i + 1) {
                        Some(b'\\') => value.push('\\'),
                        Some(b'"') => value.push('"'),
                        Some(b'n') => value.push('\n'),
                        _ => return Err("bad escape in a label value".into()),
                    }
                    i += 2;
                }
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(b'\n') => return Err("raw line feed in a label value".into()),
                Some(_) => {
                    let c = s[i..].chars().next().ok_or("not UTF-8")?;
                    value.push(c);
                    i += c.len_utf8();
                }
            }
        }
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("repeated label {name}"));
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err("expected ',' or '}' after a label".into()),
        }
    }
}

#[test]
fn the_validator_rejects_what_prometheus_would() {
    let ok = "# HELP a_b Help.\n# TYPE a_b gauge\na_b{x=\"1\",y=\"q\\\"\\\\\\n\"} 1.5\na_b 2\n";
    let parsed = parse_prometheus(ok).expect("valid");
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed["a_b{x=\"1\",y=\"q\\\"\\\\\\n\"}"], 1.5);
    for bad in [
        "1abc 1\n",
        "a 1\na 2\n",
        "a{x=\"1\"} 1\na{x=\"1\"} 2\n",
        "a{x=1} 1\n",
        "a{x=\"\\t\"} 1\n",
        "a{x=\"1\" 1\n",
        "a one\n",
        "a 1\n# TYPE a gauge\n",
        "# TYPE a gauge\n# TYPE a gauge\na 1\n",
        "# TYPE a gaugey\na 1\n",
        "a 1\nb 1\na 2\n",
        "a 1",
        "a{__x=\"1\"} 1\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted: {bad:?}");
    }
}

/// A VM that is busy (95 % of 2 vCPUs) and grows after up_after (2m).
fn busy(vmid: u32) -> VmSpec {
    ready_vm(vmid, "pve1").cpu_load(Pattern::Constant(1.9))
}

fn metrics_env() -> TestEnv {
    let env = TestEnv::start(cluster().vm(busy(101)).vm(ready_vm(102, "pve1")), "");
    let metrics = env.path("pvescale.prom");
    env.write_config("[select]\ntags = [\"autoscale\"]\n\n[policy.cpu]\nup_after = \"1m\"\n");
    // metrics_file is a top-level key: it goes before the tables.
    let text = fs::read_to_string(env.config_path()).expect("config");
    write_private(
        &env.config_path(),
        &format!("metrics_file = \"{}\"\n{text}", metrics.display()),
    );
    env
}

#[test]
fn every_run_writes_valid_metrics_and_dry_runs_do_not() {
    let env = metrics_env();
    let metrics = env.path("pvescale.prom");
    let dry = env.run(&["run", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all_output());
    assert!(!metrics.exists(), "a dry run writes no metrics file");
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{}", status.all_output());
    assert!(!metrics.exists(), "status writes no metrics file");

    let mut changed = None;
    for _ in 0..4 {
        let run = run_in_a_minute(&env);
        assert_eq!(run.code, 0, "{}", run.all_output());
        let text = fs::read_to_string(&metrics).expect("a run writes the metrics file");
        let series = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            series["pvescale_last_run_timestamp_seconds{}"],
            env.sim.now() as f64
        );
        assert_eq!(series["pvescale_last_run_success{}"], 1.0);
        assert_eq!(series["pvescale_managed_vms{}"], 2.0);
        assert!(series["pvescale_last_run_duration_seconds{}"] >= 0.0);
        assert_eq!(series["pvescale_cluster_up{cluster=\"lab\"}"], 1.0);
        for (resource, direction) in [("cpu", "up"), ("cpu", "down"), ("memory", "up")] {
            assert!(
                series.contains_key(&format!(
                    "pvescale_last_run_changes{{direction=\"{direction}\",resource=\"{resource}\"}}"
                )),
                "{text}"
            );
        }
        let vm = |metric: &str, vmid: u32| {
            series
                .get(&format!(
                    "{metric}{{cluster=\"lab\",name=\"vm{vmid}\",node=\"pve1\",type=\"vm\",vmid=\"{vmid}\"}}"
                ))
                .copied()
        };
        assert_eq!(
            vm("pvescale_vm_vcpus", 101),
            Some(f64::from(env.vcpus(101))),
            "vCPUs after the run\n{text}"
        );
        assert_eq!(
            vm("pvescale_vm_memory_bytes", 102),
            Some(env.memory(102) as f64 * 1048576.0)
        );
        // Known when the VM's config was read (to change it, or remembered from then).
        let max = vm("pvescale_vm_max_vcpus", 101);
        assert!(max.is_none_or(|m| m == 8.0), "{text}");
        let cpu = vm("pvescale_vm_cpu_utilisation_ratio", 101);
        assert!(cpu.is_none_or(|r| (0.0..=1.5).contains(&r)), "{text}");
        // The newest sample is the one at the run's time (the simulator's 10 s grid).
        let age = vm("pvescale_vm_data_age_seconds", 101);
        assert!(age.is_some_and(|a| (0.0..=10.0).contains(&a)), "{text}");
        let ups = series["pvescale_last_run_changes{direction=\"up\",resource=\"cpu\"}"];
        if env.vcpus(101) > 2 && changed.is_none() {
            assert_eq!(
                ups, 1.0,
                "the run that grew VM 101 counts one change\n{text}"
            );
            assert!(cpu.is_some(), "utilisation known when it acted\n{text}");
            changed = Some(text);
        }
    }
    assert!(changed.is_some(), "VM 101 grew within 4 minutes");
    let mode = fs::metadata(&metrics).expect("meta");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o644);
    let leftovers: Vec<_> = fs::read_dir(env.dir.path())
        .expect("list")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file left: {leftovers:?}"
    );
}

#[test]
fn an_unreachable_cluster_shows_in_the_metrics() {
    let env = metrics_env();
    env.sim.add_fault(Fault::any().status(500).forever());
    let run = env.run(&["run"]);
    assert_ne!(run.code, 0, "{}", run.all_output());
    let text = fs::read_to_string(env.path("pvescale.prom")).expect("written on failure too");
    let series = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(series["pvescale_last_run_success{}"], 0.0, "{text}");
    assert_eq!(series["pvescale_cluster_up{cluster=\"lab\"}"], 0.0);
    assert_eq!(series["pvescale_last_run_failures{scope=\"cluster\"}"], 1.0);
}

// ---- history ----------------------------------------------------------------------------------

fn history_env() -> TestEnv {
    let env = TestEnv::start(
        cluster()
            .vm(busy(101))
            .vm(ready_vm(102, "pve1")
                .memory_mib(8192)
                .mem_load(Pattern::Constant(1000.0))
                .refuse_mem_unplug(0))
            .vm(busy(103)),
        "[policy.memory]\ndown_after = \"2m\"\ncooldown_down = \"1m\"\n",
    );
    env.sim
        .add_fault(Fault::on("POST", "/nodes/pve1/qemu/103/config").status(500));
    env
}

fn history_json(env: &TestEnv, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["history", "-o", "json"];
    all.extend_from_slice(args);
    let run = env.run(&all);
    assert_eq!(run.code, 0, "{}", run.all_output());
    run.json()
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {}", run.stdout))
        .clone()
}

fn has(entries: &[serde_json::Value], vmid: u32, resource: &str, outcome: &str) -> bool {
    entries
        .iter()
        .any(|e| e["vmid"] == vmid && e["resource"] == resource && e["outcome"] == outcome)
}

#[test]
fn history_records_changes_refusals_and_failures_and_filters_them() {
    let env = history_env();
    let empty = env.run(&["history"]);
    assert_eq!(empty.code, 0, "{}", empty.all_output());
    assert!(
        empty.stdout.contains("no history entries"),
        "{}",
        empty.stdout
    );
    assert!(history_json(&env, &[]).is_empty());

    let dry = env.run(&["run", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all_output());
    let started = env.sim.now();
    let mut done = false;
    for _ in 0..8 {
        run_in_a_minute(&env);
        let all = history_json(&env, &[]);
        if has(&all, 101, "cpu", "applied")
            && has(&all, 102, "memory", "refused")
            && has(&all, 103, "cpu", "failed")
        {
            done = true;
            break;
        }
    }
    // VM 103 fails again on the next run: entries at a second time.
    run_in_a_minute(&env);
    let all = history_json(&env, &[]);
    assert!(
        done,
        "an applied change, a refusal and a failure within 8 minutes: {all:#?}"
    );
    let times: Vec<u64> = all.iter().filter_map(|e| e["time"].as_u64()).collect();
    assert_eq!(times.len(), all.len());
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert!(
        times.iter().all(|&t| t > started as u64),
        "the dry run added nothing"
    );
    let applied = all
        .iter()
        .find(|e| e["vmid"] == 101 && e["outcome"] == "applied")
        .expect("applied");
    assert_eq!(applied["cluster"], "lab");
    assert_eq!(applied["name"], "vm101");
    assert_eq!(applied["from"], 2);
    assert!(applied["to"].as_u64().is_some_and(|to| to > 2), "{applied}");
    assert!(
        applied["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{applied}"
    );
    let refused = all
        .iter()
        .find(|e| e["vmid"] == 102 && e["outcome"] == "refused")
        .expect("refused");
    assert!(refused["detail"].as_str().is_some(), "{refused}");

    // --vm
    let only_102 = history_json(&env, &["--vm", "102"]);
    assert!(!only_102.is_empty() && only_102.iter().all(|e| e["vmid"] == 102));
    // --cluster
    assert_eq!(history_json(&env, &["--cluster", "lab"]).len(), all.len());
    assert!(history_json(&env, &["--cluster", "prod"]).is_empty());
    // --since: nothing in the last 30s after two quiet minutes; everything in the last day.
    assert_eq!(history_json(&env, &["--since", "1d"]).len(), all.len());
    env.sim.advance(Duration::from_secs(120));
    assert!(history_json(&env, &["--since", "30s"]).is_empty());
    let latest = *times.last().expect("entries");
    let window = format!("{}s", env.sim.now() as u64 - latest);
    let recent = history_json(&env, &["--since", &window]);
    assert!(
        !recent.is_empty()
            && recent.len() < all.len()
            && recent.iter().all(|e| e["time"] == latest),
        "--since {window}: {recent:#?}"
    );
    let bad = env.run(&["history", "--since", "24"]);
    assert_eq!(bad.code, 2, "a duration without unit is a usage error");

    // The table.
    let table = env.run(&["history", "--vm", "101"]);
    assert_eq!(table.code, 0, "{}", table.all_output());
    assert!(table.stdout.contains("Time (UTC)"), "{}", table.stdout);
    assert!(table.stdout.contains("101 (vm101)"), "{}", table.stdout);
    assert!(table.stdout.contains("vCPUs"), "{}", table.stdout);
    assert!(table.stdout.contains("applied"), "{}", table.stdout);
    assert!(!table.stdout.contains("vm102"), "{}", table.stdout);
    let table = env.run(&["history", "--vm", "102"]);
    assert!(table.stdout.contains("refused"), "{}", table.stdout);

    // The file: one JSON object a line, private, no secret.
    let path = env.state_dir().join("history.jsonl");
    let text = fs::read_to_string(&path).expect("history file");
    assert_eq!(text.lines().count(), all.len());
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("a JSON line");
    }
    assert!(!text.contains(TOKEN_SECRET), "no secret in the history");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn history_needs_no_secret() {
    // The service gets the token secret as a credential; root reading the history has none.
    let env = TestEnv::start(cluster(), "");
    let text = format!(
        "state_dir = \"{}\"\n[[cluster]]\nname = \"lab\"\nurl = \"{}\"\n\
         token = \"{TOKEN_ID}\"\n\n[select]\ntags = [\"autoscale\"]\n",
        env.state_dir().display(),
        env.sim.url()
    );
    write_private(&env.config_path(), &text);
    let run = env.run(&["run"]);
    assert_eq!(run.code, 78, "run needs the secret: {}", run.all_output());
    let history = env.run(&["history"]);
    assert_eq!(history.code, 0, "{}", history.all_output());
    assert!(
        history.stdout.contains("no history entries"),
        "{}",
        history.stdout
    );
}

#[test]
fn journald_gets_one_summary_line_per_run_with_priorities() {
    let env = TestEnv::start(cluster().vm(ready_vm(101, "pve1")), "");
    let run = env.run_with_env(&["run"], &[("JOURNAL_STREAM", "8:12345")]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stdout.is_empty(),
        "no table for the journal: {}",
        run.stdout
    );
    let summaries: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("VMs managed"))
        .collect();
    assert_eq!(
        summaries,
        vec!["<6>1 VMs managed, 0 changed, 0 blocked, 0 failed"]
    );
    // At a terminal the table stays.
    let run = env.run(&["run"]);
    assert!(run.stdout.contains("VMs managed"), "{}", run.stdout);
    assert!(!run.stderr.contains("<6>"), "{}", run.stderr);
}

// ---- systemd units ----------------------------------------------------------------------------

fn systemd_analyze() -> Option<PathBuf> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("systemd-analyze"));
    if found.is_none() {
        println!("note: systemd-analyze is not installed; the unit checks are skipped");
    }
    found
}

/// The units in a temp dir, with ExecStart pointing at the binary under test (verify checks
/// that the command exists).
fn staged_units() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = read("packaging/systemd/pvescale.service");
    assert!(
        service.contains("ExecStart=/usr/bin/pvescale run"),
        "{service}"
    );
    fs::write(
        dir.path().join("pvescale.service"),
        service.replace("/usr/bin/pvescale", env!("CARGO_BIN_EXE_pvescale")),
    )
    .expect("write");
    fs::write(
        dir.path().join("pvescale.timer"),
        read("packaging/systemd/pvescale.timer"),
    )
    .expect("write");
    dir
}

#[test]
fn the_units_say_what_the_issue_asks() {
    let service = read("packaging/systemd/pvescale.service");
    for line in [
        "Type=oneshot",
        "SuccessExitStatus=75",
        "TimeoutStartSec=",
        "StateDirectory=pvescale",
        "ConfigurationDirectory=pvescale",
        "LoadCredential=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "User=pvescale",
        "MemoryMax=",
        "TasksMax=",
    ] {
        assert!(service.contains(line), "pvescale.service lacks {line:?}");
    }
    // The state directory as the README promises it ("0600 in a 0700 directory"): pvescale
    // itself refuses one its group could write, and nobody else needs to read it.
    let mode = service
        .lines()
        .find_map(|l| l.strip_prefix("StateDirectoryMode="))
        .expect("StateDirectoryMode= set");
    assert_eq!(mode, "0700");
    assert!(read("README.md").contains("0600 in a 0700 directory"));
    let timer = read("packaging/systemd/pvescale.timer");
    for line in ["OnCalendar=minutely", "AccuracySec=", "Persistent=true"] {
        assert!(timer.contains(line), "pvescale.timer lacks {line:?}");
    }
    let sysusers = read("packaging/systemd/pvescale.sysusers");
    assert!(sysusers.lines().any(|l| l.starts_with("u pvescale ")));
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = staged_units();
    let out = Command::new(tool)
        .current_dir(dir.path())
        .args([
            "verify",
            "--man=no",
            "./pvescale.service",
            "./pvescale.timer",
        ])
        .output()
        .expect("systemd-analyze runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

#[test]
fn the_service_exposure_is_at_most_2() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = staged_units();
    let out = Command::new(tool)
        .current_dir(dir.path())
        .args([
            "security",
            "--offline=yes",
            "--no-pager",
            "./pvescale.service",
        ])
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for pvescale.service: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure figure:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0\n{text}");
    // The README shows the figure (measured with systemd 252; other versions weigh a little
    // differently, so a different figure here is a note, not a failure).
    let readme = read("README.md");
    let shown: f64 = readme
        .split("exposure level ")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect::<String>()
        })
        .and_then(|n| n.trim_end_matches('.').parse().ok())
        .expect("the README shows the exposure level");
    assert!(shown <= 2.0, "README figure {shown}");
    if (shown - exposure).abs() > 0.05 {
        println!("note: the README shows {shown}, this systemd measures {exposure}");
    }
}

// ---- the .deb -----------------------------------------------------------------------------------

#[test]
fn the_deb_metadata_names_files_that_exist() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml");
    let deb = manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]");
    let assets = deb["assets"].as_array().expect("assets");
    let mut dests = BTreeMap::new();
    for asset in assets {
        let a = asset.as_array().expect("[source, dest, mode]");
        let (source, dest, mode) = (
            a[0].as_str().expect("source"),
            a[1].as_str().expect("dest"),
            a[2].as_str().expect("mode"),
        );
        if !source.starts_with("target/release/") {
            assert!(
                root().join(source).is_file(),
                "asset {source} does not exist"
            );
        }
        dests.insert(dest.to_string(), mode.to_string());
    }
    for (dest, mode) in [
        ("usr/bin/", "755"),
        ("usr/share/man/man1/", "644"),
        ("usr/share/man/man5/", "644"),
        ("usr/share/bash-completion/completions/pvescale", "644"),
        ("usr/share/zsh/vendor-completions/_pvescale", "644"),
        ("usr/share/fish/vendor_completions.d/pvescale.fish", "644"),
        ("usr/share/doc/pvescale/examples/pvescale.toml", "644"),
        ("etc/pvescale/pvescale.toml", "640"),
    ] {
        assert_eq!(dests.get(dest).map(String::as_str), Some(mode), "{dest}");
    }
    let units = deb["systemd-units"].as_table().expect("systemd-units");
    assert_eq!(units["enable"].as_bool(), Some(false), "not enabled");
    assert_eq!(units["start"].as_bool(), Some(false), "not started");
    let dir = units["unit-scripts"].as_str().expect("unit-scripts");
    for unit in ["pvescale.service", "pvescale.timer", "pvescale.sysusers"] {
        assert!(root().join(dir).join(unit).is_file(), "{dir}/{unit}");
    }
    let scripts = deb["maintainer-scripts"]
        .as_str()
        .expect("maintainer-scripts");
    for script in ["postinst", "postrm"] {
        let text = read(&format!("{scripts}/{script}"));
        assert!(text.contains("#DEBHELPER#"), "{script}");
    }
    use std::os::unix::fs::PermissionsExt;
    let script = root().join("packaging/build-deb.sh");
    let mode = fs::metadata(&script)
        .expect("build-deb.sh")
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "build-deb.sh is executable");
}

/// Every `pvescale_*` name in a text (a PromQL expression), without duplicates.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("pvescale_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The queries of a Grafana dashboard: every `expr`, and the variables' `query`/`definition`.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(q)) => {
                        out.push(q.clone())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_textfile_writes() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("packaging/grafana/pvescale.json")).expect("valid JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let queried: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(queried.len() >= 10, "{queried:?}");

    // The names a real run writes, against the simulated cluster, with a notification
    // channel (its families are written only where one is configured).
    let env = metrics_env();
    let rx = crate::notify::Receiver::start();
    let config = fs::read_to_string(env.config_path()).expect("config");
    write_private(
        &env.config_path(),
        &format!(
            "{config}\n[[notify.webhook]]\nname = \"ops\"\nurl = \"{}\"\n",
            rx.url("/hook")
        ),
    );
    assert_eq!(run_in_a_minute(&env).code, 0);
    let text = fs::read_to_string(env.path("pvescale.prom")).expect("metrics file");
    let written: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let unknown: Vec<&String> = queried.difference(&written).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries {unknown:?}, which the textfile does not write:\n{text}"
    );
    // The template variables are there for cluster and VM.
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["cluster", "vm"] {
        assert!(variables.contains(&v), "{variables:?}");
    }
}
