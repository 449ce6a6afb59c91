//! Bad input never panics: arbitrary TOML for the config loader (errors name the key and
//! the allowed values), arbitrary bytes for the state loader (recovered with a warning).

use std::path::Path;

use crate::common::proptest_config;
use proptest::prelude::*;
use pvescale::config::{self, FakeEnv};
use pvescale::state::State;

/// A valid base config; the property tests change one key at a time.
fn base(key: &str, value: &str) -> String {
    let (section, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let mut text = String::from(
        "[[cluster]]\nname = \"lab\"\nurl = \"https://pve1.example.com:8006\"\n\
         token = \"pvescale@pve!autoscale\"\ntoken_secret = \"s3cret-value\"\n\n\
         [select]\ntags = [\"autoscale\"]\n\n",
    );
    if section.is_empty() {
        text = format!("{leaf} = {value}\n{text}");
    } else {
        text.push_str(&format!("[{section}]\n{leaf} = {value}\n"));
    }
    text
}

const KEYS: &[&str] = &[
    "policy.window",
    "policy.memory_margin",
    "policy.backoff",
    "policy.min_samples",
    "policy.cpu.high",
    "policy.cpu.low",
    "policy.cpu.target",
    "policy.cpu.min",
    "policy.cpu.max",
    "policy.cpu.up_after",
    "policy.cpu.down_after",
    "policy.cpu.cooldown_up",
    "policy.cpu.max_step_up",
    "policy.memory.high",
    "policy.memory.min",
    "policy.memory.max",
    "policy.memory.max_step_down",
    "policy.memory.down_after",
    "host.max_memory",
    "host.max_cpu",
];

/// TOML values of every shape, many of them out of range.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| format!("{v:?}")),
        "[a-zA-Z0-9 .:/_-]{0,12}".prop_map(|s| format!("{s:?}")),
        prop::sample::select(vec![
            "\"5m\"",
            "\"0s\"",
            "\"-1m\"",
            "\"1h30m\"",
            "\"4GiB\"",
            "\"512MiB\"",
            "\"1.5GiB\"",
            "\"99999999999999GiB\"",
            "\"9999999999999999999d\"",
            "true",
            "[]",
            "{}",
            "0",
            "-1",
            "101",
            "1e309",
            "\"\"",
        ])
        .prop_map(str::to_string),
    ]
}

proptest! {
    #![proptest_config(proptest_config(400))]

    #[test]
    fn any_value_for_any_key_is_loaded_or_refused_by_name(
        key in prop::sample::select(KEYS),
        value in toml_value(),
    ) {
        let text = base(key, &value);
        match config::parse_str(&text, Path::new("/etc/pvescale/pvescale.toml"), &FakeEnv::new()) {
            Ok(_) => {}
            Err(e) => {
                let message = e.to_string();
                let leaf = key.rsplit('.').next().unwrap_or(key);
                prop_assert!(
                    message.contains(leaf),
                    "the error for {key} = {value} does not name the key: {message}"
                );
                prop_assert!(!message.contains("s3cret-value"), "secret in: {message}");
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_loader(text in "\\PC{0,400}") {
        let _ = config::parse_str(&text, Path::new("/x.toml"), &FakeEnv::new());
    }

    #[test]
    fn arbitrary_bytes_in_the_state_file_are_recovered_with_a_warning(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, &bytes).expect("write");
        let (state, warnings) = State::load(&path, 1_000);
        let parsed_ok = serde_json::from_slice::<State>(&bytes).is_ok();
        if !parsed_ok && !bytes.is_empty() {
            prop_assert!(!warnings.is_empty(), "no warning for a bad file");
            prop_assert!(state.clusters.is_empty());
        }
        // Whatever happened, the state can be written and read back.
        state.save(&path).expect("save");
        let (again, warnings) = State::load(&path, 2_000);
        prop_assert!(warnings.is_empty(), "{warnings:?}");
        prop_assert_eq!(again, state);
    }

    #[test]
    fn state_files_with_valid_json_of_the_wrong_shape_are_recovered(
        value in prop_oneof![
            Just(serde_json::json!({"version": 1, "clusters": 5})),
            Just(serde_json::json!({"version": 1, "clusters": {"lab": {"x": {}}}})),
            Just(serde_json::json!({"version": 99})),
            Just(serde_json::json!([1, 2, 3])),
            any::<i64>().prop_map(|v| serde_json::json!({"version": v})),
        ],
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, value.to_string()).expect("write");
        let (_state, warnings) = State::load(&path, 1_000);
        let ok = serde_json::from_value::<State>(value.clone())
            .is_ok_and(|s| s.version == pvescale::state::STATE_VERSION);
        if !ok {
            prop_assert!(!warnings.is_empty(), "no warning for {value}");
            let kept_aside = std::fs::read_dir(dir.path())
                .expect("dir")
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
            prop_assert!(kept_aside, "the bad file was kept aside");
        }
    }
}
