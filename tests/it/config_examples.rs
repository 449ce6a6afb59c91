//! Every config in `examples/` loads. Secret and CA files the examples name by relative path
//! are made in a temp dir next to a copy of the example, and each cluster's secret is offered
//! through the environment, so the examples can stay as a user would write them.

use std::fs;
use std::path::{Path, PathBuf};

use pvescale::config::{self, FakeEnv};

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    found.sort();
    found
}

/// Copies `example` into a temp dir with every relative `*_file` of its clusters created there,
/// and returns the env that provides every cluster's secret.
fn stage(example: &Path, dir: &Path) -> (PathBuf, FakeEnv) {
    let text = fs::read_to_string(example).expect("readable example");
    let doc: toml::Table = toml::from_str(&text).expect("example is TOML");
    let mut env = FakeEnv::new();
    let clusters = doc
        .get("cluster")
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default();
    for cluster in clusters.iter().filter_map(|c| c.as_table()) {
        let name = cluster
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let suffix: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        env = env
            .var(
                &format!("PVESCALE_TOKEN_SECRET_{suffix}"),
                "example-token-secret",
            )
            .var(&format!("PVESCALE_PASSWORD_{suffix}"), "example-password");
        for (key, value) in cluster {
            let (Some(path), true) = (value.as_str(), key.ends_with("_file")) else {
                continue;
            };
            let path = Path::new(path);
            assert!(
                path.is_relative(),
                "{}: {key} should be relative so that this test can provide it",
                example.display()
            );
            let content = if key == "ca_file" {
                PEM
            } else {
                "example-secret\n"
            };
            fs::write(dir.join(path), content).expect("write staged file");
        }
    }
    let config = dir.join(example.file_name().expect("file name"));
    fs::write(&config, &text).expect("copy example");
    (config, env)
}

#[test]
fn every_example_loads() {
    let found = examples();
    assert!(found.len() >= 2, "expected examples, found {found:?}");
    for example in found {
        let dir = tempfile::tempdir().expect("temp dir");
        let (config, env) = stage(&example, dir.path());
        if let Err(e) = config::load_with(&config, &env) {
            panic!("{} does not load:\n{e}", example.display());
        }
    }
}

#[test]
fn the_full_example_sets_every_key_to_its_default() {
    // examples/pvescale.toml shows the defaults: the policy it sets (before overrides, which are
    // illustrations) must equal the built-in one, so the comments can not drift from the code.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pvescale.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, env) = stage(&example, dir.path());
    let (c, _) = config::load_with(&config, &env).expect("loads");
    assert_eq!(c.policy(), &pvescale::policy::Policy::default());
    let target = c.clusters()[0].target();
    assert_eq!(target.timeout, std::time::Duration::from_secs(10));
    assert_eq!(target.connect_timeout, std::time::Duration::from_secs(5));
}

#[test]
fn the_full_example_names_every_key() {
    // Every key the loader accepts appears in examples/pvescale.toml (set or commented out).
    let text =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pvescale.toml"))
            .expect("readable");
    for key in [
        "state_dir",
        "[[cluster]]",
        "name",
        "url",
        "fallback_urls",
        "token",
        "token_secret_file",
        "token_secret",
        "user",
        "password_file",
        "password",
        "ca_file",
        "fingerprint",
        "insecure",
        "timeout",
        "connect_timeout",
        "[select]",
        "tags",
        "vmids",
        "pools",
        "exclude_tags",
        "exclude_vmids",
        "[policy]",
        "window",
        "min_samples",
        "memory_margin",
        "backoff",
        "[policy.cpu]",
        "[policy.memory]",
        "enabled",
        "scale_up",
        "scale_down",
        "high",
        "low",
        "target",
        "min",
        "max",
        "up_after",
        "down_after",
        "cooldown_up",
        "cooldown_down",
        "max_step_up",
        "max_step_down",
        "[host]",
        "max_memory",
        "max_cpu",
        "[[override]]",
        "cpu =",
        "memory =",
    ] {
        let bare = key.starts_with('[') || key.ends_with('=');
        let found = if bare {
            text.contains(key)
        } else {
            text.lines().any(|l| {
                let l = l.trim_start().trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
            })
        };
        assert!(found, "examples/pvescale.toml does not show {key}");
    }
}
