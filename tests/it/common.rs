//! The test environment shared by the end-to-end tests: a simulated cluster, a temporary
//! directory with a config that points at it, and a way to run the real `pvescale` binary
//! with the simulated clock.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[allow(unused_imports)]
pub use pvesim::{Fault, NodeSpec, Pattern, Privs, Sim, SimBuilder, VmSpec};

pub const TOKEN_ID: &str = "pvescale@pve!autoscale";
pub const TOKEN_SECRET: &str = "5f2c1f0e-7d1a-4c39-9f3e-c0ffee5ec2e7";

/// A running simulated cluster and a config directory for pvescale.
pub struct TestEnv {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
}

/// What one run of the binary printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// A VM that is ready for live scaling of both CPU and memory, tagged `autoscale`.
pub fn ready_vm(vmid: u32, node: &str) -> VmSpec {
    VmSpec::new(vmid, node)
        .name(&format!("vm{vmid}"))
        .sockets(1)
        .cores(8)
        .vcpus(2)
        .memory_mib(4096)
        .numa(true)
        .hotplug("network,disk,usb,cpu,memory")
        .tags(&["autoscale"])
}

/// One simulated minute passes (a run a minute, as the timer does).
pub fn minute(env: &TestEnv) {
    env.sim.advance(Duration::from_secs(60));
}

/// One simulated minute passes, then `pvescale run`.
pub fn run_in_a_minute(env: &TestEnv) -> Run {
    minute(env);
    env.run(&["run"])
}

/// Waits for a config task of node `pve1` through the client (polls every 20 ms, 10 s at most).
pub fn wait_task(client: &pvescale::pve::Client, upid: &str) -> pvescale::pve::TaskOutcome {
    client
        .wait_task(
            "pve1",
            upid,
            Duration::from_secs(10),
            Duration::from_millis(20),
        )
        .expect("task status readable")
}

/// CPU demand of `cores` from the simulation's start on (half a core before it): the samples
/// Proxmox keeps from before the first run do not already hold the breach.
pub fn busy_from_start(cores: f64) -> Pattern {
    Pattern::Step {
        before: 0.5,
        after: cores,
        at: 0,
    }
}

/// A VM ready for live scaling that wants 1.9 cores (95 % of its 2 vCPUs) from the start.
pub fn busy_vm(vmid: u32, node: &str) -> VmSpec {
    ready_vm(vmid, node).cpu_load(busy_from_start(1.9))
}

/// One busy VM (101, [`busy_vm`]) and a policy that scales up after 1 minute: the second run
/// (one simulated minute after the first) raises its vCPUs.
pub fn busy_env() -> TestEnv {
    TestEnv::start(
        cluster().vm(busy_vm(101, "pve1")),
        "[policy.cpu]\nup_after = \"1m\"\n",
    )
}

/// A builder with one node and the pvescale token.
pub fn cluster() -> SimBuilder {
    Sim::builder()
        .node(NodeSpec::new("pve1").cpus(32).memory_mib(131072))
        .token(TOKEN_ID, TOKEN_SECRET, Privs::pvescale())
}

impl TestEnv {
    /// Starts the simulator and writes a config selecting `tags = ["autoscale"]` with the
    /// given extra TOML (policy, overrides...).
    pub fn start(builder: SimBuilder, extra_toml: &str) -> TestEnv {
        let sim = builder.start().expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let env = TestEnv { sim, dir };
        env.write_config(extra_toml);
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("pvescale.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    /// The cluster section: URL, token, secret file and CA file of the simulator.
    pub fn cluster_toml(&self) -> String {
        let secret = self.path("lab.secret");
        write_private(&secret, TOKEN_SECRET);
        let ca = self.sim.write_ca_file(self.dir.path()).expect("CA file");
        format!(
            "[[cluster]]\nname = \"lab\"\nurl = \"{}\"\ntoken = \"{TOKEN_ID}\"\n\
             token_secret_file = \"{}\"\nca_file = \"{}\"\ntimeout = \"5s\"\n",
            self.sim.url(),
            secret.display(),
            ca.display()
        )
    }

    /// Writes a complete config: state dir, the cluster, selection by tag, then `extra`.
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "state_dir = \"{}\"\n\n{}\n{}\n",
            self.state_dir().display(),
            self.cluster_toml(),
            if extra.contains("[select]") {
                extra.to_string()
            } else {
                format!("[select]\ntags = [\"autoscale\"]\n\n{extra}")
            }
        );
        write_private(&self.config_path(), &text);
    }

    /// Runs `pvescale ARGS --config <ours>` at the simulator's current time.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_env(args, &[])
    }

    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvescale"));
        cmd.args(args)
            .arg("--config")
            .arg(self.config_path())
            .env("PVESCALE_NOW", self.sim.now().to_string())
            .env_remove("PVESCALE_CONFIG")
            .env_remove("STATE_DIRECTORY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("pvescale runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `pvescale run` once per simulated minute for `minutes` minutes; returns the runs.
    pub fn run_every_minute(&self, minutes: u32) -> Vec<Run> {
        (0..minutes)
            .map(|_| {
                minute(self);
                self.run(&["run"])
            })
            .collect()
    }

    pub fn vcpus(&self, vmid: u32) -> u32 {
        self.sim.vm(vmid).expect("vm exists").vcpus
    }

    pub fn memory(&self, vmid: u32) -> u64 {
        self.sim.vm(vmid).expect("vm exists").memory_mib
    }

    /// Config writes (POST/PUT .../config) the simulator received.
    pub fn writes(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| (r.method == "POST" || r.method == "PUT") && r.path.ends_with("/config"))
            .count()
    }
}

/// proptest's config for the property tests: `cases` cases, and the failure cases found so far
/// saved in and replayed from `<test file>.proptest-regressions` beside the test's source.
/// (proptest's default looks for the crate's `main.rs` and would use
/// `tests/proptest-regressions/<test file>.txt` instead, since `tests/it/` has one.)
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}

/// A port on 127.0.0.1 that nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The report of one VM in a `--output json` report.
pub fn vm_json(report: &serde_json::Value, vmid: u32) -> serde_json::Value {
    report["clusters"][0]["vms"]
        .as_array()
        .unwrap_or_else(|| panic!("no vms in the report:\n{report:#}"))
        .iter()
        .find(|vm| vm["vmid"] == vmid)
        .unwrap_or_else(|| panic!("VM {vmid} not in the report:\n{report:#}"))
        .clone()
}

/// A table's text without borders and with runs of whitespace collapsed, so that a cell
/// wrapped over two lines (in the last column) reads as one phrase.
pub fn squash(table: &str) -> String {
    table
        .chars()
        .map(|c| {
            if "│┌┐└┘├┤┬┴┼─═╞╡╪".contains(c) {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs once a minute until the next run would change something (without running it).
pub fn advance_until_a_change_is_due(env: &TestEnv) {
    for _ in 0..30 {
        env.sim.advance(Duration::from_secs(60));
        let plan = env.run(&["run", "--dry-run", "--output", "json"]).json();
        if plan["summary"]["planned"].as_u64().unwrap_or(0) > 0 {
            return;
        }
        env.run(&["run"]);
    }
    panic!("no change became due");
}
