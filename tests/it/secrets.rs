//! Secrets never leak: every command, with `-v` and `-vv`, against failing servers and
//! dead notification channels; all output, the state, the history and the metrics file are
//! searched for every credential pvescale holds.

use crate::common::*;

const PASSWORD: &str = "Pa55-w0rd-never-printed-7c1e";
const SMTP_PASSWORD: &str = "smtp-secret-never-printed-93ab";
const GOTIFY_TOKEN: &str = "AgotifyTOKENneverPrinted42";
const WEBHOOK_TOKEN: &str = "Bearer whk-never-printed-5d0f";
const WRONG_TOKEN: &str = "0000dead-beef-4bad-b0a7-5ec2e7f00d00";

/// Every secret the config below holds (the real token secret included).
fn secrets() -> Vec<&'static str> {
    vec![
        TOKEN_SECRET,
        PASSWORD,
        SMTP_PASSWORD,
        GOTIFY_TOKEN,
        WEBHOOK_TOKEN,
        WRONG_TOKEN,
    ]
}

/// Two clusters on the simulator (a token that works, a user with a password that works),
/// a third with a wrong token, and three notification channels that all point at dead ports.
fn env() -> TestEnv {
    let env = TestEnv::start(
        cluster()
            .user("admin@pam", PASSWORD, Privs::pvescale())
            .vm(ready_vm(101, "pve1").cpu_load(busy_from_start(1.95)))
            .vm(ready_vm(102, "pve1")
                .memory_mib(8192)
                .mem_load(Pattern::Constant(900.0))),
        "",
    );
    let dir = env.dir.path();
    write_private(&dir.join("pw"), PASSWORD);
    write_private(&dir.join("wrong.secret"), WRONG_TOKEN);
    write_private(&dir.join("smtp.pw"), SMTP_PASSWORD);
    write_private(&dir.join("gotify.token"), GOTIFY_TOKEN);
    let ca = env.sim.write_ca_file(dir).expect("CA");
    let dead = closed_port();
    let extra = format!(
        r#"
[[cluster]]
name = "bypassword"
url = "{url}"
user = "admin@pam"
password_file = "{pw}"
ca_file = "{ca}"

[[cluster]]
name = "wrongtoken"
url = "{url}"
token = "{TOKEN_ID}"
token_secret_file = "{wrong}"
ca_file = "{ca}"

[select]
tags = ["autoscale"]

[policy.cpu]
up_after = "1m"

[policy.memory]
down_after = "1m"

[notify.email]
host = "127.0.0.1"
port = {dead}
security = "none"
from = "pvescale@localhost"
to = ["ops@localhost"]
user = "pvescale"
password_file = "{smtp}"

[notify.gotify]
url = "http://127.0.0.1:{dead}"
token_file = "{gotify}"

[[notify.webhook]]
name = "hook"
url = "http://127.0.0.1:{dead}/hook"
headers = {{ Authorization = "{WEBHOOK_TOKEN}" }}
"#,
        url = env.sim.url(),
        pw = dir.join("pw").display(),
        wrong = dir.join("wrong.secret").display(),
        smtp = dir.join("smtp.pw").display(),
        gotify = dir.join("gotify.token").display(),
        ca = ca.display(),
    );
    let text = format!(
        "state_dir = \"{}\"\nmetrics_file = \"{}\"\n\n{}\n{}",
        env.state_dir().display(),
        dir.join("pvescale.prom").display(),
        env.cluster_toml(),
        extra
    );
    write_private(&env.config_path(), &text);
    env
}

fn assert_clean(what: &str, text: &str) {
    for secret in secrets() {
        assert!(
            !text.contains(secret),
            "{what} contains a secret ({}...):\n{text}",
            &secret[..6]
        );
    }
}

#[test]
fn no_command_prints_or_stores_a_secret() {
    let env = env();
    let commands: Vec<Vec<&str>> = vec![
        vec!["run", "-v"],
        vec!["run", "-vv"],
        vec!["run", "--dry-run", "-vv"],
        vec!["run", "--output", "json", "-vv"],
        vec!["status", "-vv"],
        vec!["status", "--output", "json", "-v"],
        vec!["check", "-vv"],
        vec!["check", "--notify-test", "-vv"],
        vec!["history", "-v"],
        vec!["recommend", "-v"],
        vec!["simulate", "-v"],
        vec!["--help"],
    ];
    let mut runs = 0;
    for round in 0..3 {
        minute(&env);
        if round == 2 {
            // The servers start failing: every kind of error message gets its turn.
            env.sim
                .add_fault(Fault::on("GET", "/cluster/metrics/export").status(500));
            env.sim
                .add_fault(Fault::on_prefix("POST", "/nodes").status(596));
            env.sim
                .add_fault(Fault::on_prefix("GET", "/nodes/pve1/qemu/102").status(403));
        }
        for args in &commands {
            let run = env.run(args);
            assert!(!run.all_output().contains("panicked"), "{args:?}: panic");
            assert_clean(&format!("output of {args:?}"), &run.all_output());
            runs += 1;
        }
    }
    assert!(runs >= 36);
    // A login failure must not echo the password either.
    write_private(&env.dir.path().join("pw"), "not-the-password");
    let run = env.run(&["run", "-vv"]);
    assert_clean("output with a failing login", &run.all_output());
    assert!(
        run.all_output().contains("admin@pam"),
        "{}",
        run.all_output()
    );

    for file in ["state/state.json", "state/history.jsonl", "pvescale.prom"] {
        let path = env.dir.path().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} should exist: {e}", path.display()));
        assert_clean(file, &text);
    }
    // Every request the server saw: no secret in a URL or a form field (the sim never records
    // the token secret or the cookie; the password is recorded as <redacted>).
    for request in env.sim.requests() {
        let line = format!(
            "{} {} {:?} {:?}",
            request.method, request.path, request.query, request.form
        );
        assert_clean("a request", &line);
    }
}

#[test]
fn secret_and_state_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = env();
    env.run_every_minute(2);
    for file in ["state/state.json", "state/history.jsonl"] {
        let mode = std::fs::metadata(env.dir.path().join(file))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is private: {mode:o}");
    }
    let dir_mode = std::fs::metadata(env.state_dir())
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(
        dir_mode & 0o077,
        0,
        "the state directory is private: {dir_mode:o}"
    );
}

#[test]
fn a_world_readable_config_with_an_inline_secret_and_insecure_tls_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::start(cluster().vm(ready_vm(101, "pve1")), "");
    let text = format!(
        "state_dir = \"{}\"\n[[cluster]]\nname = \"lab\"\nurl = \"{}\"\ntoken = \"{TOKEN_ID}\"\n\
         token_secret = \"{TOKEN_SECRET}\"\ninsecure = true\n[select]\ntags = [\"autoscale\"]\n",
        env.state_dir().display(),
        env.sim.url()
    );
    std::fs::write(env.config_path(), text).expect("write");
    std::fs::set_permissions(env.config_path(), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    for _ in 0..2 {
        let run = run_in_a_minute(&env);
        assert_eq!(run.code, 0, "{}", run.all_output());
        let err = run.stderr.to_lowercase();
        assert!(
            err.contains("readable"),
            "warns about the readable secret: {}",
            run.stderr
        );
        assert!(
            err.contains("insecure"),
            "warns about insecure on every run: {}",
            run.stderr
        );
        assert_clean("warnings", &run.all_output());
    }
}
