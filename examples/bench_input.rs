//! Cost of large local input (issue 18.4): what a config with many tags, a large state file
//! and one huge value in the `metrics/export` stream cost.
//!
//! `cargo run --release --example bench_input [-- --timeout 120]`
//!
//! Each case runs in a **child process** (this example re-executed with `--child CASE`), so
//! that its peak RSS (`VmHWM`) is its own; a case still running after `--timeout` seconds is
//! killed and shown as such. Cases:
//!
//! - `tags-80k`, `tags-4.5M`: loading a config whose `[select] tags` lists that many
//!   distinct tags (`config::load_with`); `tags-4.5M-str`: the same text validated without
//!   the file size cap (`config::parse_str`, TOML parsing included);
//! - `state-60MB`, `state-100MB`: `State::load` of a state file of that size (about 1.4 KiB
//!   per VM, every field filled), written first by the parent;
//! - `export-15MiB`: `parse_metrics_export` of a body holding one sample with a 15 MiB string,
//!   handed over 16 KiB at a time (as TLS records arrive).
//!
//! Figures are printed, never asserted (the unit tests assert the counts: parse attempts of a
//! huge export value, the state size cap).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvescale::policy::{Direction, MemorySource, Resource};
use pvescale::state::{ConfigSignature, KnownConfig, State, VmState};

const CASES: &[&str] = &[
    "tags-80k",
    "tags-4.5M",
    "tags-4.5M-str",
    "state-60MB",
    "state-100MB",
    "export-15MiB",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let (case, dir) = (&args[i + 1], PathBuf::from(&args[i + 2]));
        child(case, &dir);
        return;
    }
    let timeout = args
        .iter()
        .position(|a| a == "--timeout")
        .and_then(|i| args.get(i + 1))
        .and_then(|t| t.parse().ok())
        .unwrap_or(120u64);
    let dir = tempfile::tempdir().expect("temp dir");
    eprintln!("writing the inputs in {} ...", dir.path().display());
    write_tags_config(&dir.path().join("tags-80k.toml"), 80_000);
    write_tags_config(&dir.path().join("tags-4.5M.toml"), 4_500_000);
    write_state(&dir.path().join("state-60MB.json"), 60_000_000);
    write_state(&dir.path().join("state-100MB.json"), 100_000_000);
    println!(
        "{:<14} {:>10} {:>10}  result",
        "case", "seconds", "peak MiB"
    );
    for case in CASES {
        let started = Instant::now();
        let mut proc = Command::new(std::env::current_exe().expect("exe"))
            .args(["--child", case])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("child starts");
        let deadline = started + Duration::from_secs(timeout);
        let mut done = None;
        while Instant::now() < deadline {
            if let Some(status) = proc.try_wait().expect("wait") {
                done = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if done.is_none() {
            let _ = proc.kill();
            let _ = proc.wait();
            println!(
                "{case:<14} {:>10} {:>10}  killed: not finished after {timeout} s",
                format!(">{timeout}"),
                "-"
            );
            continue;
        }
        let mut out = String::new();
        let _ = proc.stdout.take().expect("stdout").read_to_string(&mut out);
        let _ = proc.wait();
        println!("{case:<14} {}", out.trim_end());
    }
}

/// Runs one case and prints `seconds peak_mib result`.
fn child(case: &str, dir: &Path) {
    let started = Instant::now();
    let result = match case {
        "tags-80k" | "tags-4.5M" => {
            let path = dir.join(format!("{case}.toml"));
            match pvescale::config::load_with(&path, &pvescale::config::FakeEnv::new()) {
                Ok((config, _)) => format!("{} tags selected", config.selection().tags().len()),
                Err(e) => format!("error: {}", first_line(&e.to_string())),
            }
        }
        "tags-4.5M-str" => {
            // The text handed over directly: no file size cap, the validation's own cost.
            let path = dir.join("tags-4.5M.toml");
            let text = std::fs::read_to_string(&path).expect("config");
            match pvescale::config::parse_str(&text, &path, &pvescale::config::FakeEnv::new()) {
                Ok((config, _)) => format!("{} tags selected", config.selection().tags().len()),
                Err(e) => format!("error: {}", first_line(&e.to_string())),
            }
        }
        "state-60MB" | "state-100MB" => {
            let path = dir.join(format!("{case}.json"));
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let (state, warnings) = State::peek(&path);
            let vms: usize = state.clusters.values().map(|c| c.len()).sum();
            match warnings.first() {
                Some(w) => format!("{} MB: {vms} VMs; {}", size / 1_000_000, first_line(w)),
                None => format!("{} MB: {vms} VMs loaded", size / 1_000_000),
            }
        }
        "export-15MiB" => {
            let mut body =
                br#"{"data":{"data":[{"timestamp":1,"id":"qemu/101","metric":"cpu","value":1,"junk":""#
                    .to_vec();
            body.extend(std::iter::repeat_n(b'x', 15 << 20));
            body.extend(br#""}]}}"#);
            let mut reader = Trickle {
                body: &body,
                step: 16 * 1024,
            };
            let mut seen = 0;
            match pvescale::pve::export::parse_metrics_export(&mut reader, &mut |_| seen += 1) {
                Ok(n) => format!(
                    "{n} sample parsed from {} MiB in 16 KiB reads",
                    body.len() >> 20
                ),
                Err(e) => format!("error: {e}"),
            }
        }
        other => format!("unknown case {other}"),
    };
    println!(
        "{:>10.2} {:>10}  {result}",
        started.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(110).collect()
}

/// `VmHWM` of this process, in MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn write_tags_config(path: &Path, n: usize) {
    let mut text = String::from(
        "[[cluster]]\nname = \"lab\"\nurl = \"https://pve1.example.com:8006\"\n\
         token = \"pvescale@pve!autoscale\"\ntoken_secret = \"0000\"\n\n[select]\ntags = [",
    );
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!("\"t{i}\""));
    }
    text.push_str("]\n");
    std::fs::write(path, text).expect("write config");
}

/// A state of about `bytes` bytes: VMs with every field filled.
fn write_state(path: &Path, bytes: u64) {
    let per_vm = 1_395u64;
    let mut state = State::default();
    for id in 0..(bytes / per_vm) as u32 {
        let mut vm = VmState {
            last_seen: 1_700_000_000,
            ..VmState::default()
        };
        vm.cpu.above_since = Some(1_700_000_000);
        vm.cpu.observed_at = Some(1_700_000_000);
        vm.memory.observed_at = Some(1_700_000_000);
        vm.record_change(Resource::Memory, Direction::Up, 2048, 4096, 1_700_000_000);
        vm.record_change(Resource::Cpu, Direction::Up, 2, 4, 1_700_000_000);
        vm.record_refusal(
            Resource::Memory,
            Direction::Down,
            1_700_000_000,
            Duration::from_secs(3600),
            ConfigSignature {
                vcpus: 2,
                memory_mib: 4096,
                digest: Some("0123456789abcdef0123456789abcdef01234567".into()),
            },
            "hotplug problem - error unplug memory module: the guest refused to remove the \
             DIMM dimm7 (timeout)",
        );
        vm.known_config = Some(KnownConfig {
            max_vcpus: 8,
            cpu_hotplug: true,
            memory_hotplug: true,
            numa: true,
            windows: false,
            guest_agent: true,
            balloon_mib: Some(1024),
            memory_source: MemorySource::Guest,
            digest: "0123456789abcdef0123456789abcdef01234567".into(),
            learned_at: 1_700_000_000,
        });
        state.set_vm("production-cluster", 100_000 + id, vm);
    }
    state.save(path).expect("write state");
}

/// Hands out the body `step` bytes at a time.
struct Trickle<'a> {
    body: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.body.len());
        buf[..n].copy_from_slice(&self.body[..n]);
        self.body = &self.body[n..];
        Ok(n)
    }
}
