//! Issue 18: files that are not what they seem (links, FIFOs, directories others can write),
//! driven through the real binary.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A file another user would like pvescale to overwrite or re-mode.
fn victim(env: &TestEnv, name: &str) -> std::path::PathBuf {
    let path = env.path(name);
    fs::write(&path, b"precious").expect("victim");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

fn assert_untouched(victim: &Path) {
    assert_eq!(
        fs::read(victim).expect("victim"),
        b"precious",
        "{}",
        victim.display()
    );
    let mode = fs::metadata(victim).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "{} re-moded", victim.display());
}

/// `pvescale run`, killed (and the test failed) if it has not ended within 60 s: a FIFO
/// opened for a blocking read would hang it.
fn run_within_a_minute(env: &TestEnv) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvescale"))
        .args(["run", "--config"])
        .arg(env.config_path())
        .env("PVESCALE_NOW", env.sim.now().to_string())
        .env_remove("STATE_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pvescale starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pvescale run hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn links_and_fifos_in_the_state_dir_are_not_followed() {
    let env = busy_env();
    let state_victim = victim(&env, "state-victim");
    let history_victim = victim(&env, "history-victim");
    let dir = env.state_dir();
    fs::create_dir(&dir).expect("state dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    symlink(&state_victim, env.state_file()).expect("link");
    symlink(&history_victim, dir.join("history.jsonl")).expect("link");
    // The old fixed temporary name, pointing at the victim too.
    symlink(&state_victim, dir.join(".state.json.tmp")).expect("link");

    let first = run_within_a_minute(&env);
    assert!(
        first.stderr.contains("symbolic link") && first.stderr.contains("kept aside"),
        "{}",
        first.all_output()
    );
    assert!(
        fs::symlink_metadata(env.state_file())
            .expect("state")
            .is_file()
    );
    // The second run grows VM 101: a history line, refused through the link.
    minute(&env);
    let second = run_within_a_minute(&env);
    assert!(env.vcpus(101) > 2, "{}", second.all_output());
    assert!(
        second.stderr.contains("cannot write the history")
            && second.stderr.contains("symbolic link"),
        "{}",
        second.all_output()
    );
    assert_untouched(&state_victim);
    assert_untouched(&history_victim);

    // A FIFO as the state: reported and set aside, the run does not wait for a writer.
    fs::remove_file(env.state_file()).expect("rm");
    let status = Command::new("mkfifo")
        .arg(env.state_file())
        .status()
        .expect("mkfifo");
    assert!(status.success());
    minute(&env);
    let third = run_within_a_minute(&env);
    assert!(third.stderr.contains("a FIFO"), "{}", third.all_output());
    assert!(
        fs::symlink_metadata(env.state_file())
            .expect("state")
            .is_file()
    );
}

#[test]
fn a_state_dir_others_can_write_is_refused() {
    let env = busy_env();
    let dir = env.state_dir();
    fs::create_dir(&dir).expect("state dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    let run = env.run(&["run"]);
    assert_ne!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stderr.contains("every user") && run.stderr.contains("chmod go-w"),
        "{}",
        run.all_output()
    );
    assert!(!env.state_file().exists(), "nothing written there");
    assert_eq!(env.writes(), 0);
    let check = env.run(&["check"]);
    assert!(check.stdout.contains("REFUSED"), "{}", check.all_output());
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
}

#[test]
fn the_metrics_file_is_written_safely_in_a_directory_others_can_write() {
    let env = busy_env();
    // node_exporter's textfile directory, where another user could plant links. As root, it
    // is really another user's; either way every user may write it here.
    let textfiles = env.path("textfiles");
    fs::create_dir(&textfiles).expect("dir");
    fs::set_permissions(&textfiles, fs::Permissions::from_mode(0o777)).expect("chmod");
    if pvescale::fs_guard::Guard::current().uid() == 0 {
        std::os::unix::fs::chown(&textfiles, Some(65534), Some(65534)).expect("chown");
    }
    let victim = victim(&env, "metrics-victim");
    symlink(&victim, textfiles.join(".pvescale.prom.tmp")).expect("link");
    let metrics = textfiles.join("pvescale.prom");
    let text = fs::read_to_string(env.config_path()).expect("config");
    write_private(
        &env.config_path(),
        &format!("metrics_file = \"{}\"\n{text}", metrics.display()),
    );
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stderr.contains("writable by every user"),
        "warned: {}",
        run.all_output()
    );
    let written = fs::read_to_string(&metrics).expect("metrics written");
    assert!(written.contains("pvescale_"), "{written}");
    assert!(fs::symlink_metadata(&metrics).expect("meta").is_file());
    assert_untouched(&victim);
}

/// Terminal and journal control in a VM name, a tag and an error message from the server.
const HOSTILE: &str = "evil\u{1b}[2J\u{1b}]0;owned\u{7}\n<0>forged\u{9b}31m\u{202e}";

/// No byte that drives a terminal, and no line that starts where a forged one would.
fn assert_inert(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}')
        .collect();
    assert!(bad.is_empty(), "{what} holds {bad:?}:\n{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start_matches(['│', ' ', '┆']).starts_with("<0>")),
        "{what} has a forged line:\n{text}"
    );
}

#[test]
fn text_from_the_server_is_escaped_before_it_is_shown_logged_notified_or_kept() {
    let env = TestEnv::start(
        cluster().vm(busy_vm(101, "pve1")
            .name(HOSTILE)
            .tags(&["autoscale", "x\u{1b}[31m"])),
        "",
    );
    let rx = crate::notify::Receiver::start();
    env.write_config(&format!(
        "[policy.cpu]\nup_after = \"1m\"\n\n[notify]\nmin_interval = \"0s\"\n\n\
         [[notify.webhook]]\nurl = \"{}\"\n",
        rx.url("/hook")
    ));
    // The second run's config write fails with the hostile text as Proxmox's message.
    env.sim.add_fault(
        Fault::on("POST", "/nodes/pve1/qemu/101/config")
            .status(500)
            .message(&format!("VM 101 says {HOSTILE}")),
    );
    let journal = [("JOURNAL_STREAM", "8:12345")];
    let mut outputs = vec![env.run_with_env(&["run"], &journal)];
    minute(&env);
    outputs.push(env.run_with_env(&["run"], &journal));
    outputs.push(env.run(&["status", "-v"]));
    outputs.push(env.run(&["status", "-o", "json"]));
    outputs.push(env.run(&["history"]));
    for run in &outputs {
        assert_inert("output", &run.all_output());
    }
    let all: String = outputs.iter().map(Run::all_output).collect();
    assert!(
        all.contains("evil\\u{1b}[2J"),
        "the name is shown, escaped:\n{all}"
    );
    assert!(all.contains("\\n<0>forged"), "{all}");
    assert!(
        all.contains("VM 101 says evil\\u{1b}"),
        "the error too:\n{all}"
    );
    let history = fs::read_to_string(env.state_dir().join("history.jsonl")).expect("history");
    let entries: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(!entries.is_empty());
    for e in &entries {
        assert_inert("history name", e["name"].as_str().unwrap_or_default());
        assert_inert("history detail", e["detail"].as_str().unwrap_or_default());
    }
    let sent = rx.to("/hook");
    assert!(!sent.is_empty(), "the failure was notified");
    for request in sent {
        let body: serde_json::Value = serde_json::from_str(&request.body).expect("json");
        assert_inert("notification", &body.to_string());
        fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
                serde_json::Value::Object(m) => m.values().for_each(|v| strings(v, out)),
                _ => {}
            }
        }
        let mut texts = Vec::new();
        strings(&body, &mut texts);
        for t in texts {
            assert_inert("notification text", &t);
        }
    }
}
