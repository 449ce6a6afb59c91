//! Unit tests of loading and validation. Environments are [`FakeEnv`]s; files live in temp dirs.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::policy::WindowEffect;
use crate::pve::{Auth, TlsMode};

const SECRET: &str = "s3cr3t-5f0c-4b1e-9d2a";

const MINIMAL: &str = r#"
[[cluster]]
name = "lab"
url = "https://pve1.example.com"
token = "pvescale@pve!autoscale"

[select]
tags = ["autoscale"]
"#;

fn env() -> FakeEnv {
    FakeEnv::new().var("PVESCALE_TOKEN_SECRET_LAB", SECRET)
}

fn parse(text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    parse_str(text, Path::new("/etc/pvescale/pvescale.toml"), &env())
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok((c, _)) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// The error message; also checks that it never contains the secret.
fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(SECRET), "secret in error: {msg}");
            msg
        }
    }
}

/// `MINIMAL` with `extra` appended (TOML tables after the minimal ones).
fn with(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}")
}

fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    text[..at].matches('\n').count() + 1
}

#[test]
fn minimal_config_gets_the_defaults() {
    let c = ok(MINIMAL);
    assert_eq!(c.policy(), &Policy::default());
    assert_eq!(c.state_dir(), None);
    assert!(c.overrides().is_empty());
    let [cluster] = c.clusters() else {
        panic!("one cluster")
    };
    assert_eq!(cluster.name(), "lab");
    let t = cluster.target();
    assert_eq!(t.urls, ["https://pve1.example.com:8006"]);
    assert_eq!(t.tls, TlsMode::SystemRoots);
    assert_eq!(t.timeout, Duration::from_secs(10));
    assert_eq!(t.connect_timeout, Duration::from_secs(5));
    match &t.auth {
        Auth::Token { id, secret } => {
            assert_eq!(id, "pvescale@pve!autoscale");
            assert_eq!(secret.expose(), SECRET);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        cluster.secret_source(),
        &SecretSource::EnvVar("PVESCALE_TOKEN_SECRET_LAB".into())
    );
}

#[test]
fn unknown_keys_give_file_line_column_and_key() {
    let text = with("[policy.cpu]\nhigh = 90\nhgih = 95\n");
    let msg = err(&text);
    let line = line_of(&text, "hgih");
    assert!(
        msg.starts_with(&format!(
            "/etc/pvescale/pvescale.toml:{line}:1: policy.cpu.hgih: unknown field `hgih`"
        )),
        "{msg}"
    );

    let text = MINIMAL.replace("token =", "tokn_secret = \"x\"\ntoken =");
    let msg = err(&text);
    let line = line_of(&text, "tokn_secret");
    assert!(
        msg.contains(&format!(
            ":{line}:1: cluster[0].tokn_secret: unknown field `tokn_secret`"
        )),
        "{msg}"
    );

    let msg = err(&format!("metrics_path = \"/tmp/x\"\n{MINIMAL}"));
    assert!(
        msg.contains(":1:1: metrics_path: unknown field `metrics_path`"),
        "{msg}"
    );

    let text = with("[[override]]\nvmids = [105]\ncpu = { max = 4, mx = 5 }\n");
    let msg = err(&text);
    assert!(
        msg.contains("override[0].cpu.mx: unknown field `mx`"),
        "{msg}"
    );
}

#[test]
fn single_bracket_tables_get_a_hint() {
    let msg = err(&MINIMAL.replace("[[cluster]]", "[cluster]"));
    assert!(
        msg.contains(":2:1: cluster:") && msg.contains("write [[cluster]]"),
        "{msg}"
    );
    let msg = err(&with("[override]\nvmids = [101]\ncpu = { max = 2 }\n"));
    assert!(msg.contains("write [[override]]"), "{msg}");
}

#[test]
fn toml_syntax_errors_have_a_position() {
    let text = with("[policy\nwindow = \"5m\"\n");
    let msg = err(&text);
    let line = line_of(&text, "[policy");
    assert!(
        msg.starts_with(&format!("/etc/pvescale/pvescale.toml:{line}:")),
        "{msg}"
    );
}

#[test]
fn low_not_below_high() {
    let text = with("[policy.cpu]\nlow = 80\n");
    let msg = err(&text);
    let line = line_of(&text, "low = 80");
    assert!(
        msg.contains(&format!(
            ":{line}:7: policy.cpu.low: low (80) must be below high (80)"
        )),
        "{msg}"
    );
    let msg = err(&with("[policy.memory]\nlow = 50\nhigh = 40\n"));
    assert!(
        msg.contains("policy.memory.low: low (50) must be below high (40)"),
        "{msg}"
    );
    let msg = err(&with("[policy.cpu]\ntarget = 90\n"));
    assert!(
        msg.contains("policy.cpu.target: target (90) must be between low (25) and high (80)"),
        "{msg}"
    );
}

#[test]
fn percentages_in_range() {
    for bad in ["0", "101", "-5", "nan", "inf"] {
        let msg = err(&with(&format!("[policy.cpu]\nhigh = {bad}\n")));
        assert!(msg.contains("policy.cpu.high:"), "{msg}");
        assert!(msg.contains("above 0 and at most 100"), "{msg}");
    }
    let msg = err(&with("[policy.cpu]\nhigh = \"80%\"\n"));
    assert!(
        msg.contains("policy.cpu.high:") && msg.contains("no %"),
        "{msg}"
    );
    let msg = err(&with("[host]\nmax_cpu = 120\n"));
    assert!(msg.contains("host.max_cpu: 120 is out of range"), "{msg}");
    let msg = err(&with("[policy]\nmemory_margin = 100\n"));
    assert!(
        msg.contains("policy.memory_margin: 100 is out of range"),
        "{msg}"
    );
    let c = ok(&with(
        "[policy.cpu]\nhigh = 87.5\nlow = 10\n[host]\nmax_memory = 95\n",
    ));
    assert_eq!(c.policy().cpu.high, 87.5);
    assert_eq!(c.policy().host.max_memory, 95.0);
}

#[test]
fn min_above_max_and_smallest_sizes() {
    let msg = err(&with("[policy.memory]\nmin = \"8GiB\"\nmax = \"4GiB\"\n"));
    assert!(
        msg.contains("policy.memory.min: min (8 GiB) must not be above max (4 GiB)"),
        "{msg}"
    );
    let msg = err(&with("[policy.cpu]\nmin = 4\nmax = 2\n"));
    assert!(
        msg.contains("policy.cpu.min: min (4) must not be above max (2)"),
        "{msg}"
    );
    let msg = err(&with("[policy.cpu]\nmin = 0\n"));
    assert!(
        msg.contains("policy.cpu.min: 0 vCPUs is too small: at least 1 vCPUs"),
        "{msg}"
    );
    let msg = err(&with("[policy.memory]\nmin = 512\n"));
    assert!(
        msg.contains(
            "policy.memory.min: 512 MiB is too small: at least 1 GiB (Proxmox VE memory hotplug"
        ),
        "{msg}"
    );
    let msg = err(&with("[policy.memory]\nmax_step_down = \"256MiB\"\n"));
    assert!(
        msg.contains("policy.memory.max_step_down: 256 MiB is too small: at least 512 MiB"),
        "{msg}"
    );
    let msg = err(&with("[policy.cpu]\nmax_step_up = 0\n"));
    assert!(msg.contains("policy.cpu.max_step_up:"), "{msg}");
}

#[test]
fn sizes_and_counts() {
    let c = ok(&with(
        "[policy.memory]\nmin = 2048\nmax = \"1.5GiB\"\nmax_step_up = \"512MiB\"\n[policy.memory.x]\n",
    )
    .replace("[policy.memory.x]\n", "")
    .replace("max = \"1.5GiB\"", "max = \"2.5GiB\""));
    assert_eq!(c.policy().memory.min, 2048);
    assert_eq!(c.policy().memory.max, 2560);
    assert_eq!(c.policy().memory.max_step_up, 512);

    let text = with("[policy.memory]\nmax = \"4G\"\n");
    let msg = err(&text);
    let line = line_of(&text, "max = \"4G\"");
    assert!(
        msg.contains(&format!(
            ":{line}:7: policy.memory.max: invalid size \"4G\""
        )),
        "{msg}"
    );
    assert!(msg.contains("did you mean \"GiB\""), "{msg}");
    let msg = err(&with("[policy.memory]\nmax = -1\n"));
    assert!(
        msg.contains("policy.memory.max: a size can not be negative"),
        "{msg}"
    );
    let msg = err(&with("[policy.memory]\nmax = 1.5\n"));
    assert!(
        msg.contains("policy.memory.max:") && msg.contains("\"1.5GiB\""),
        "{msg}"
    );
    let msg = err(&with("[policy.cpu]\nmax = \"4\"\n"));
    assert!(
        msg.contains("policy.cpu.max:") && msg.contains("whole number of vCPUs"),
        "{msg}"
    );
}

#[test]
fn a_window_longer_than_the_export_keeps_is_refused() {
    // Proxmox keeps 180 generations of 10 s samples for cluster/metrics/export: a longer
    // window would silently average only the last 30 minutes.
    assert_eq!(
        ok(&with("[policy]\nwindow = \"30m\"\n")).policy().window,
        Duration::from_secs(1800)
    );
    for (window, shown) in [("45m", "45m"), ("31m", "31m"), ("1h", "1h")] {
        let text = with(&format!("[policy]\nwindow = \"{window}\"\n"));
        let msg = err(&text);
        let line = line_of(&text, "window");
        assert!(
            msg.contains(&format!(
                ":{line}:10: policy.window: {shown} is longer than the 30 minutes of samples \
                 Proxmox keeps for cluster/metrics/export (180 × 10 s): at most 30m"
            )),
            "{msg}"
        );
    }
}

#[test]
fn durations() {
    let c = ok(&with(
        "[policy]\nwindow = \"10m\"\nbackoff = \"2h\"\n[policy.cpu]\nup_after = \"1m30s\"\ncooldown_up = \"0s\"\n",
    ));
    assert_eq!(c.policy().window, Duration::from_secs(600));
    assert_eq!(c.policy().backoff, Duration::from_secs(7200));
    assert_eq!(c.policy().cpu.up_after, Duration::from_secs(90));
    assert_eq!(c.policy().cpu.cooldown_up, Duration::ZERO);

    let text = with("[policy]\nwindow = \"5x\"\n");
    let msg = err(&text);
    let line = line_of(&text, "window");
    assert!(
        msg.contains(&format!(
            ":{line}:10: policy.window: invalid duration \"5x\""
        )),
        "{msg}"
    );
    let msg = err(&with("[policy]\nwindow = 300\n"));
    assert!(
        msg.contains("policy.window: a duration needs a unit"),
        "{msg}"
    );
    let msg = err(&with("[policy]\nwindow = \"30s\"\n"));
    assert!(
        msg.contains("policy.window: 30s is out of range: 1m to 30m"),
        "{msg}"
    );
    let msg = err(&with("[policy]\nbackoff = \"0s\"\n"));
    assert!(
        msg.contains("policy.backoff: must be more than 0s"),
        "{msg}"
    );
    let msg = err(&with("[policy]\nmin_samples = 0\n"));
    assert!(
        msg.contains("policy.min_samples: must be at least 1"),
        "{msg}"
    );
}

#[test]
fn urls_are_checked_and_normalised() {
    let set_url = |url: &str| MINIMAL.replace("https://pve1.example.com", url);
    for (given, want) in [
        ("https://PVE1.example.com", "https://pve1.example.com:8006"),
        (
            "https://pve1.example.com:443/",
            "https://pve1.example.com:443",
        ),
        ("HTTPS://10.0.0.1:8006/api2/json", "https://10.0.0.1:8006"),
        ("https://[fd00::1]", "https://[fd00::1]:8006"),
        ("https://[FD00::1]:8007", "https://[fd00::1]:8007"),
    ] {
        let c = ok(&set_url(given));
        assert_eq!(c.clusters()[0].target().urls, [want], "{given}");
    }
    for (bad, why) in [
        ("http://pve1:8006", "HTTPS only"),
        ("pve1.example.com", "must be https://"),
        ("https://", "invalid host"),
        ("https://:8006", "invalid host"),
        ("https://pve1:0", "port must be 1 to 65535"),
        ("https://pve1:99999", "port must be 1 to 65535"),
        ("https://pve1:8006/#v1:0:18", "path, query or fragment"),
        ("https://root:pw@pve1", "must not contain a user name"),
        ("https://pve_1", "invalid host"),
        ("https://[fd00::1", "unclosed"),
    ] {
        let msg = err(&set_url(bad));
        assert!(
            msg.contains("cluster[0].url:") && msg.contains(why),
            "{bad}: {msg}"
        );
    }
    let c = ok(&MINIMAL.replace(
        "token =",
        "fallback_urls = [\"https://pve2.example.com\", \"https://pve3:8007\"]\ntoken =",
    ));
    assert_eq!(
        c.clusters()[0].target().urls,
        [
            "https://pve1.example.com:8006",
            "https://pve2.example.com:8006",
            "https://pve3:8007"
        ]
    );
    let msg = err(&MINIMAL.replace(
        "token =",
        "fallback_urls = [\"https://pve1.example.com:8006/\"]\ntoken =",
    ));
    assert!(
        msg.contains("cluster[0].fallback_urls[0]: https://pve1.example.com:8006 is listed twice"),
        "{msg}"
    );
}

#[test]
fn fingerprints_are_checked_and_normalised() {
    let hex = "abcdef0123456789".repeat(4);
    let colons: Vec<String> = (0..32).map(|i| hex[i * 2..i * 2 + 2].to_owned()).collect();
    let want = colons.join(":").to_ascii_uppercase();
    for given in [hex.clone(), colons.join(":"), want.clone()] {
        let c = ok(&MINIMAL.replace("token =", &format!("fingerprint = \"{given}\"\ntoken =")));
        assert_eq!(
            c.clusters()[0].target().tls,
            TlsMode::Fingerprint(want.clone())
        );
    }
    for bad in [
        &hex[..62],
        &format!("{}zz", &hex[..62]),
        "AB:CDE:F",
        &format!("{hex}00"),
    ] {
        let text = MINIMAL.replace("token =", &format!("fingerprint = \"{bad}\"\ntoken ="));
        let msg = err(&text);
        let line = line_of(&text, "fingerprint");
        assert!(
            msg.contains(&format!(":{line}:15: cluster[0].fingerprint: must be the server certificate's SHA-256 fingerprint")),
            "{msg}"
        );
    }
}

#[test]
fn tls_modes_are_exclusive_and_ca_file_must_exist() {
    let fp = "AB".repeat(32);
    let msg = err(&MINIMAL.replace(
        "token =",
        &format!("fingerprint = \"{fp}\"\ninsecure = true\ntoken ="),
    ));
    assert!(
        msg.contains("cluster[0].insecure: fingerprint and insecure = true are alternatives"),
        "{msg}"
    );
    let msg = err(&MINIMAL.replace(
        "token =",
        &format!("fingerprint = \"{fp}\"\nca_file = \"/nonexistent/ca.pem\"\ntoken ="),
    ));
    assert!(
        msg.contains("cluster[0].fingerprint: ca_file and fingerprint are alternatives"),
        "{msg}"
    );
    // insecure = false is the same as not set.
    let c = ok(&MINIMAL.replace("token =", "insecure = false\ntoken ="));
    assert_eq!(c.clusters()[0].target().tls, TlsMode::SystemRoots);
    let (c, warnings) = parse(&MINIMAL.replace("token =", "insecure = true\ntoken =")).unwrap();
    assert_eq!(c.clusters()[0].target().tls, TlsMode::Insecure);
    assert!(warnings.iter().any(|w| {
        w.message()
            .contains("cluster[0].insecure: TLS certificate verification is off")
    }));

    let msg = err(&MINIMAL.replace("token =", "ca_file = \"/nonexistent/ca.pem\"\ntoken ="));
    assert!(
        msg.contains("cluster[0].ca_file: cannot read /nonexistent/ca.pem"),
        "{msg}"
    );

    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    fs::write(dir.path().join("junk.pem"), "hello\n").unwrap();
    let cfg = dir.path().join("pvescale.toml");
    let text = MINIMAL.replace("token =", "ca_file = \"ca.pem\"\ntoken =");
    let (c, _) = parse_str(&text, &cfg, &env()).unwrap();
    assert_eq!(
        c.clusters()[0].target().tls,
        TlsMode::CaFile(dir.path().join("ca.pem"))
    );
    let text = MINIMAL.replace("token =", "ca_file = \"junk.pem\"\ntoken =");
    let msg = parse_str(&text, &cfg, &env()).unwrap_err().to_string();
    assert!(
        msg.contains("cluster[0].ca_file:") && msg.contains("holds no PEM certificate"),
        "{msg}"
    );
}

#[test]
fn timeouts() {
    let c = ok(&MINIMAL.replace(
        "token =",
        "timeout = \"30s\"\nconnect_timeout = \"3s\"\ntoken =",
    ));
    assert_eq!(c.clusters()[0].target().timeout, Duration::from_secs(30));
    assert_eq!(
        c.clusters()[0].target().connect_timeout,
        Duration::from_secs(3)
    );
    // Only `timeout` set, shorter than the default connect timeout: the connect timeout
    // follows it (the user never wrote the 5s).
    let c = ok(&MINIMAL.replace("token =", "timeout = \"3s\"\ntoken ="));
    assert_eq!(
        c.clusters()[0].target().connect_timeout,
        Duration::from_secs(3)
    );
    let c = ok(&MINIMAL.replace("token =", "timeout = \"30s\"\ntoken ="));
    assert_eq!(
        c.clusters()[0].target().connect_timeout,
        Duration::from_secs(5)
    );
    // Both written, the connect timeout longer: that one is the user's mistake.
    let msg = err(&MINIMAL.replace(
        "token =",
        "timeout = \"2s\"\nconnect_timeout = \"5s\"\ntoken =",
    ));
    assert!(
        msg.contains("cluster[0].connect_timeout: 5s must not be longer than timeout (2s)"),
        "{msg}"
    );
    let msg = err(&MINIMAL.replace("token =", "timeout = \"0s\"\ntoken ="));
    assert!(
        msg.contains("cluster[0].timeout: must be more than 0s"),
        "{msg}"
    );
}

#[test]
fn cluster_names_unique_and_safe() {
    let second = "[[cluster]]\nname = \"LAB\"\nurl = \"https://pve9\"\ntoken = \"a@pve!b\"\n";
    let text = with(second);
    let msg = err(&text);
    let line = line_of(&text, "name = \"LAB\"");
    assert!(
        msg.contains(&format!(
            ":{line}:8: cluster[1].name: cluster name \"LAB\" is already used by cluster[0]"
        )),
        "{msg}"
    );
    let msg = err(&with(&second.replace("LAB", "l.ab")).replace("\"lab\"", "\"l-ab\""));
    assert!(msg.contains("cluster[1].name: cluster names \"l.ab\" and \"l-ab\" (cluster[0]) map to the same environment variable PVESCALE_TOKEN_SECRET_L_AB"), "{msg}");
    for bad in ["", "-lab", "lab one", "lab/1", &"x".repeat(65)] {
        let msg = err(&MINIMAL.replace("\"lab\"", &format!("{bad:?}")));
        assert!(
            msg.contains("cluster[0].name: must be 1-64 characters"),
            "{bad}: {msg}"
        );
    }
    let msg = err("[select]\ntags = [\"a\"]\n");
    assert!(
        msg.contains("cluster: at least one [[cluster]] is needed"),
        "{msg}"
    );
    let msg = err("[[cluster]]\nname = \"lab\"\ntoken = \"a@pve!b\"\n[select]\ntags = [\"a\"]\n");
    assert!(
        msg.contains(":1:1: cluster[0]: missing field `url`"),
        "{msg}"
    );
}

#[test]
fn auth_rules() {
    let msg = err(&MINIMAL.replace("token =", "user = \"root@pam\"\ntoken ="));
    assert!(
        msg.contains("cluster[0].user: token and user are alternatives"),
        "{msg}"
    );
    let msg = err(&MINIMAL.replace("token = \"pvescale@pve!autoscale\"", ""));
    assert!(
        msg.contains("cluster[0]: set token = \"user@realm!tokenid\""),
        "{msg}"
    );
    let msg = err(&MINIMAL.replace("token =", "password = \"x\"\ntoken ="));
    assert!(
        msg.contains("cluster[0].password: belongs to user login"),
        "{msg}"
    );
    for bad in [
        "pvescale@pve",
        "pvescale!x",
        "@pve!x",
        "a@pve!",
        "a@pve!b c",
    ] {
        let msg = err(&MINIMAL.replace("pvescale@pve!autoscale", bad));
        assert!(msg.contains("cluster[0].token: must be"), "{bad}: {msg}");
    }
    // A token pasted with its secret: refused without echoing either part.
    let msg = err(&MINIMAL.replace(
        "pvescale@pve!autoscale",
        &format!("pvescale@pve!autoscale={SECRET}"),
    ));
    assert!(msg.contains("without the secret"), "{msg}");
    assert!(!msg.contains("autoscale="), "{msg}");

    let text = MINIMAL.replace(
        "token = \"pvescale@pve!autoscale\"",
        "user = \"pvescale@pve\"\npassword = \"pw\"",
    );
    let c = ok(&text);
    match &c.clusters()[0].target().auth {
        Auth::Password { user, password } => {
            assert_eq!(user, "pvescale@pve");
            assert_eq!(password.expose(), "pw");
        }
        other => panic!("{other:?}"),
    }
    let msg = err(&text.replace("password =", "token_secret_file = \"x\"\npassword ="));
    assert!(
        msg.contains("cluster[0].token_secret_file: belongs to token login"),
        "{msg}"
    );
    let msg = err(&MINIMAL.replace(
        "token =",
        "token_secret = \"a\"\ntoken_secret_file = \"/x\"\ntoken =",
    ));
    assert!(
        msg.contains("cluster[0].token_secret: set token_secret_file or token_secret, not both"),
        "{msg}"
    );
}

#[test]
fn secrets_from_file_inline_credential_env_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pvescale.toml");
    fs::write(dir.path().join("lab.secret"), "from-file\n").unwrap();
    let creds = dir.path().join("creds");
    fs::create_dir(&creds).unwrap();
    fs::write(creds.join("lab.token"), "from-credential\r\n").unwrap();
    let env = env().var("CREDENTIALS_DIRECTORY", creds.as_os_str());
    let secret_of = |text: &str, env: &FakeEnv| {
        let (c, _) = parse_str(text, &cfg, env).unwrap();
        let t = c.clusters()[0].target();
        let secret = match &t.auth {
            Auth::Token { secret, .. } => secret,
            Auth::Password { password, .. } => password,
        };
        (
            secret.expose().to_owned(),
            c.clusters()[0].secret_source().clone(),
        )
    };
    let file = MINIMAL.replace("token =", "token_secret_file = \"lab.secret\"\ntoken =");
    assert_eq!(
        secret_of(&file, &env),
        (
            "from-file".into(),
            SecretSource::File(dir.path().join("lab.secret"))
        )
    );
    let inline = MINIMAL.replace("token =", "token_secret = \"from-inline\"\ntoken =");
    assert_eq!(
        secret_of(&inline, &env),
        ("from-inline".into(), SecretSource::Inline)
    );
    assert_eq!(
        secret_of(MINIMAL, &env),
        (
            "from-credential".into(),
            SecretSource::Credential(creds.join("lab.token"))
        )
    );
    assert_eq!(
        secret_of(MINIMAL, &self::env()),
        (
            SECRET.into(),
            SecretSource::EnvVar("PVESCALE_TOKEN_SECRET_LAB".into())
        )
    );
    // The password goes the same way, with its own names.
    fs::write(creds.join("lab.password"), "pw-from-credential\n").unwrap();
    let text = MINIMAL.replace(
        "token = \"pvescale@pve!autoscale\"",
        "user = \"pvescale@pve\"",
    );
    assert_eq!(
        secret_of(&text, &env),
        (
            "pw-from-credential".into(),
            SecretSource::Credential(creds.join("lab.password"))
        )
    );
}

#[test]
fn a_missing_secret_lists_every_place_looked() {
    let text = MINIMAL.replace("\"lab\"", "\"lab-2\"");
    let e = parse_str(
        &text,
        Path::new("/etc/pvescale/pvescale.toml"),
        &FakeEnv::new(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cluster[0]: no API token secret for cluster \"lab-2\""),
        "{msg}"
    );
    for place in [
        "token_secret_file (not set)",
        "token_secret (not set)",
        "$CREDENTIALS_DIRECTORY/lab-2.token (CREDENTIALS_DIRECTORY is not set)",
        "environment variable PVESCALE_TOKEN_SECRET_LAB_2 (not set)",
    ] {
        assert!(msg.contains(place), "{place}: {msg}");
    }
    let msg = err(&MINIMAL.replace(
        "token =",
        "token_secret_file = \"/nonexistent/lab.secret\"\ntoken =",
    ));
    assert!(
        msg.contains(
            "cluster[0].token_secret_file: token_secret_file /nonexistent/lab.secret: No such file"
        ),
        "{msg}"
    );
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let inline = MINIMAL.replace("token =", &format!("token_secret = \"{SECRET}\"\ntoken ="));
    let (c, warnings) = parse(&inline).unwrap();
    let debug = format!("{c:?} {warnings:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("redacted"));
    let (c, _) = parse(MINIMAL).unwrap();
    assert!(!format!("{c:?} {:?}", c.clusters()[0].target()).contains(SECRET));

    // A secret of the wrong type is refused without quoting it.
    let msg = err(&MINIMAL.replace("token =", "token_secret = 918273645\ntoken ="));
    assert!(
        msg.contains("cluster[0].token_secret: a secret must be a string")
            && !msg.contains("918273645"),
        "{msg}"
    );
    let msg = err(&MINIMAL
        .replace("token =", "password = 918273645\nuser = \"a@pam\"\n#")
        .replace("token_secret", ""));
    assert!(!msg.contains("918273645"), "{msg}");
    // Another problem in the file does not drag the inline secret into the message.
    let msg = err(&inline.replace("tags = [\"autoscale\"]", "tags = []"));
    assert!(msg.contains("[select] matches no VM"), "{msg}");
}

#[test]
fn inline_secret_in_a_readable_file_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pvescale.toml");
    let inline = MINIMAL.replace("token =", "token_secret = \"abc\"\ntoken =");
    use std::os::unix::fs::PermissionsExt;
    let load_mode = |text: &str, mode: u32| {
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        load_with(&path, &env()).unwrap().1
    };
    let w = load_mode(&inline, 0o644);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].message()
            .contains("cluster[0].token_secret: the config file is readable by others (mode 644)"),
        "{w:?}"
    );
    assert!(
        w[0].message()
            .contains(&format!("chmod 600 {}", path.display())),
        "{w:?}"
    );
    let w = load_mode(&inline, 0o640);
    assert!(
        w[0].message().contains("readable by its group (mode 640)"),
        "{w:?}"
    );
    assert!(load_mode(&inline, 0o600).is_empty());
    // No inline secret, no warning, whatever the mode.
    assert!(load_mode(MINIMAL, 0o644).is_empty());
}

#[test]
fn world_readable_secret_file_warns() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pvescale.toml");
    let secret = dir.path().join("lab.secret");
    fs::write(&secret, "x\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let text = MINIMAL.replace("token =", "token_secret_file = \"lab.secret\"\ntoken =");
    let (_, w) = parse_str(&text, &cfg, &env()).unwrap();
    assert!(
        w.iter()
            .any(|w| w.message().contains("is readable by everyone")),
        "{w:?}"
    );
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(parse_str(&text, &cfg, &env()).unwrap().1.is_empty());
}

#[test]
fn an_oversized_or_fifo_config_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    // Sparse: no disk, but reading it whole would take its size in memory and time.
    let file = fs::File::create(&big).unwrap();
    file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
    let msg = load_with(&big, &env()).unwrap_err().to_string();
    assert!(msg.contains("larger than 4 MiB"), "{msg}");
    let fifo = dir.path().join("fifo.toml");
    crate::fs_guard::tests::mkfifo(&fifo);
    // Nobody writes to it: a blocking open would hang here.
    let msg = load_with(&fifo, &env()).unwrap_err().to_string();
    assert!(msg.contains("not a regular file"), "{msg}");
}

#[test]
fn load_reports_unreadable_files() {
    let e = load_with(Path::new("/nonexistent/pvescale.toml"), &env()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("/nonexistent/pvescale.toml: cannot read the config file"),
        "{msg}"
    );
    assert!(matches!(e, ConfigError::Read { .. }));
    assert_eq!(ConfigError::EXIT_CODE, 78);
}

#[test]
fn many_tags_are_deduplicated_in_order() {
    // 20,000 tags, each written twice (the second time in capitals), and two pools twice.
    let list: Vec<String> = (0..20_000)
        .map(|i| format!("\"t{i}\""))
        .chain((0..20_000).map(|i| format!("\"T{i}\"")))
        .collect();
    let c = ok(&MINIMAL.replace(
        "tags = [\"autoscale\"]",
        &format!(
            "tags = [{}]\npools = [\"a\", \"b\", \"a\", \"b\"]\nexclude_tags = [\"t7\"]",
            list.join(", ")
        ),
    ));
    let s = c.selection();
    assert_eq!(s.tags().len(), 20_000);
    assert_eq!(s.tags()[..3], ["t0", "t1", "t2"]);
    assert_eq!(s.tags()[19_999], "t19999");
    assert_eq!(s.pools(), ["a", "b"]);
    assert!(s.matches(200, &["x".into(), "T19999".into()], None));
    assert!(!s.matches(200, &["t7".into()], None), "excluded");
    assert!(!s.matches(200, &["t20000".into()], None));
}

#[test]
fn selection_union_minus_exclusions() {
    let c = ok(&MINIMAL.replace(
        "tags = [\"autoscale\"]",
        "tags = [\"AutoScale\", \"web\"]\nvmids = [101, 102]\npools = [\"prod\"]\nexclude_tags = [\"no-autoscale\"]\nexclude_vmids = [102]",
    ));
    let s = c.selection();
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(s.tags(), ["autoscale", "web"]);
    assert!(s.matches(200, &tags(&["autoscale"]), None));
    assert!(
        s.matches(200, &tags(&["AUTOSCALE"]), None),
        "tags ignore case"
    );
    assert!(s.matches(101, &[], None));
    assert!(s.matches(300, &[], Some("prod")));
    assert!(!s.matches(300, &[], Some("Prod")), "pools are exact");
    assert!(!s.matches(300, &tags(&["other"]), Some("dev")));
    assert!(
        !s.matches(101, &tags(&["No-Autoscale"]), None),
        "exclude_tags win"
    );
    assert!(
        !s.matches(102, &tags(&["web"]), Some("prod")),
        "exclude_vmids win"
    );
    assert!(c.manages(crate::guest::GuestKind::Vm, 101, &[], None));
    assert!(!c.manages(crate::guest::GuestKind::Ct, 101, &[], None));

    let msg = err(&MINIMAL.replace("tags = [\"autoscale\"]", "exclude_tags = [\"x\"]"));
    assert!(
        msg.contains("select: [select] matches no VM: set tags, vmids or pools"),
        "{msg}"
    );
    let msg = err(&MINIMAL.replace("[select]\ntags = [\"autoscale\"]", ""));
    assert!(msg.contains("select: [select] is missing"), "{msg}");
    let msg = err(&MINIMAL.replace(
        "tags = [\"autoscale\"]",
        "tags = [\"-bad\", \"ok\"]\nvmids = [99]",
    ));
    assert!(
        msg.contains("select.tags[0]: \"-bad\" is not a Proxmox VE tag"),
        "{msg}"
    );
    assert!(msg.contains("select.vmids[0]: 99 is not a VM ID"), "{msg}");
    let (_, w) = parse(&MINIMAL.replace(
        "tags = [\"autoscale\"]",
        "vmids = [101]\nexclude_vmids = [101]\ntags = [\"a\"]\nexclude_tags = [\"A\"]",
    ))
    .unwrap();
    assert_eq!(w.len(), 2, "{w:?}");
}

#[test]
fn overrides_apply_in_order_later_wins() {
    let c = ok(&with(
        r#"
[[override]]
tags = ["db"]
cpu = { max = 16, min = 2 }
memory = { scale_down = false }

[[override]]
vmids = [105]
cpu = { max = 12 }

[[override]]
pools = ["batch"]
cpu = { high = 95, low = 10, up_after = "5m" }
"#,
    ));
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let base = c.policy().clone();
    assert_eq!(
        c.policy_for(crate::guest::GuestKind::Vm, 200, &[], None),
        base
    );

    let db = c.policy_for(crate::guest::GuestKind::Vm, 200, &tags(&["DB"]), None);
    assert_eq!((db.cpu.min, db.cpu.max), (2, 16));
    assert!(!db.memory.scale_down && db.memory.scale_up);
    assert_eq!(db.memory.max, base.memory.max);

    let both = c.policy_for(crate::guest::GuestKind::Vm, 105, &tags(&["db"]), None);
    assert_eq!((both.cpu.min, both.cpu.max), (2, 12), "later override wins");
    let only_vmid = c.policy_for(crate::guest::GuestKind::Vm, 105, &[], None);
    assert_eq!((only_vmid.cpu.min, only_vmid.cpu.max), (1, 12));

    let batch = c.policy_for(crate::guest::GuestKind::Vm, 300, &[], Some("batch"));
    assert_eq!((batch.cpu.high, batch.cpu.low), (95.0, 10.0));
    assert_eq!(batch.cpu.up_after, Duration::from_secs(300));
    assert_eq!(c.overrides().len(), 3);
    assert!(c.overrides()[0].matches(crate::guest::GuestKind::Vm, 1, &tags(&["db"]), None));
}

#[test]
fn overrides_are_checked_alone_and_in_combination() {
    // Alone, against [policy].
    let msg = err(&with("[[override]]\nvmids = [105]\ncpu = { min = 10 }\n"));
    assert!(msg.contains("override[0].cpu.min: min (10) must not be above max (8) (after applying this override to [policy])"), "{msg}");
    let msg = err(&with(
        "[[override]]\nvmids = [105]\nmemory = { max = 512 }\n",
    ));
    assert!(
        msg.contains("override[0].memory.max: 512 MiB is too small"),
        "{msg}"
    );
    let msg = err(&with("[[override]]\ncpu = { max = 4 }\n"));
    assert!(
        msg.contains("override[0]: an override needs vmids, tags, pools or types"),
        "{msg}"
    );
    let msg = err(&with("[[override]]\nvmids = [105]\n"));
    assert!(msg.contains("override[0]: changes nothing"), "{msg}");

    // Two overrides that can meet on one VM (any VM can carry both tags).
    let two = "[[override]]\ntags = [\"a\"]\ncpu = { max = 2 }\n[[override]]\ntags = [\"b\"]\ncpu = { min = 4, max = 6 }\n[[override]]\ntags = [\"c\"]\ncpu = { min = 3 }\n";
    let msg = err(&with(two));
    assert!(
        msg.contains("override[2].cpu: together with override[0] (they can apply to the same VM, later wins): min: min (3) must not be above max (2)"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    // The same settings on VM IDs that never meet are fine.
    ok(&with(
        &two.replace("tags = [\"a\"]", "vmids = [101]")
            .replace("tags = [\"c\"]", "vmids = [102]"),
    ));
    // A VM is in one pool only.
    ok(&with(
        &two.replace("tags = [\"a\"]", "pools = [\"p1\"]")
            .replace("tags = [\"c\"]", "pools = [\"p2\"]"),
    ));
    let msg = err(&with(
        &two.replace("tags = [\"a\"]", "pools = [\"p1\"]")
            .replace("tags = [\"c\"]", "pools = [\"p1\", \"p2\"]"),
    ));
    assert!(
        msg.contains("override[2].cpu: together with override[0]"),
        "{msg}"
    );
    // Three-way: low from one, high from another, target from a third.
    let three = "[[override]]\ntags = [\"a\"]\ncpu = { low = 50, high = 90 }\n[[override]]\ntags = [\"b\"]\ncpu = { high = 60, low = 20 }\n[[override]]\ntags = [\"c\"]\ncpu = { low = 40, target = 70 }\n";
    let msg = err(&with(three));
    assert!(msg.contains("override[2].cpu: together with override[1] (they can apply to the same VM, later wins): target: target (70) must be between low (40) and high (60)"), "{msg}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = with(
        "[policy]\nwindow = \"2h\"\n[policy.cpu]\nlow = 90\n[policy.memory]\nmin = \"32GiB\"\n",
    );
    let e = parse(&text).unwrap_err();
    let keys: Vec<&str> = e.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["policy.window", "policy.cpu.low", "policy.memory.min"]
    );
    assert_eq!(e.to_string().lines().count(), 3);
    assert!(e.problems().iter().all(|p| p.location.is_some()));
}

#[test]
fn state_dir_is_taken_from_the_config_directory() {
    let c = ok(&format!("state_dir = \"state\"\n{MINIMAL}"));
    assert_eq!(c.state_dir(), Some(Path::new("/etc/pvescale/state")));
    let c = ok(&format!("state_dir = \"/srv/pvescale\"\n{MINIMAL}"));
    assert_eq!(c.state_dir(), Some(Path::new("/srv/pvescale")));
    assert_eq!(
        c.resolved_state_dir(&FakeEnv::new()),
        Path::new("/srv/pvescale")
    );
    let msg = err(&format!("state_dir = \"\"\n{MINIMAL}"));
    assert!(msg.contains("state_dir: is empty"), "{msg}");
}

#[test]
fn stale_after_and_saturated_factor_are_loaded_or_refused_with_the_reason() {
    let c = ok(&format!(
        "{MINIMAL}\n[policy]\nstale_after = \"15m\"\n[policy.cpu]\nsaturated_factor = 2\n\
         [policy.memory]\nsaturated_factor = 1.25\n"
    ));
    assert_eq!(c.policy().stale_after, Duration::from_secs(900));
    assert_eq!(c.policy().cpu.saturated_factor, 2.0);
    assert_eq!(c.policy().memory.saturated_factor, 1.25);
    let msg = err(&format!("{MINIMAL}\n[policy]\nstale_after = \"1m\"\n"));
    assert!(
        msg.contains("policy.stale_after: 1m is too short: at least 2m"),
        "{msg}"
    );
    let msg = err(&format!(
        "{MINIMAL}\n[policy.cpu]\nsaturated_factor = 0.5\n"
    ));
    assert!(
        msg.contains("policy.cpu.saturated_factor: 0.5 is out of range: 1 to 10"),
        "{msg}"
    );
}

// ---- [[schedule]] ----------------------------------------------------------------------------

#[test]
fn schedules_select_vms_and_are_in_force_in_their_window() {
    let c = ok(&with(
        r#"
[[schedule]]
name = "backup"
when = "Sat 01:00..05:00"
timezone = "Europe/Berlin"
freeze = "all"

[[schedule]]
when = ["Mon..Fri 07:30..18:00", "Sat 09:00..12:00"]
tags = ["Web"]
floor = { cpu = 4, memory = "8GiB" }
"#,
    ));
    assert_eq!(c.schedules().len(), 2);
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin").expect("tz database");
    // Saturday 5 December 2026, 02:00 in Berlin (01:00 UTC): the backup window, for every VM.
    let saturday_2am = 1_796_432_400;
    let web = vec!["web".to_string()];
    let windows = c.windows_in_force(101, &[], None, saturday_2am, &jiff::tz::TimeZone::UTC);
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0].name, "backup");
    assert_eq!(windows[0].effect, WindowEffect::Freeze);
    assert_eq!(windows[0].until_local, "05:00");
    // Saturday 10:00 in Berlin: the floor, only for VMs tagged web, named by its time.
    let saturday_10am = saturday_2am + 8 * 3600;
    assert!(
        c.windows_in_force(101, &[], None, saturday_10am, &berlin)
            .is_empty()
    );
    let floors = c.windows_in_force(101, &web, None, saturday_10am, &berlin);
    assert_eq!(floors.len(), 1, "{floors:?}");
    assert_eq!(floors[0].name, "Sat 09:00..12:00");
    assert_eq!(
        floors[0].effect,
        WindowEffect::Floor {
            cpu: Some(4),
            memory_mib: Some(8192)
        }
    );
}

#[test]
fn schedule_mistakes_are_named_with_their_key() {
    for (extra, key, says) in [
        (
            "[[schedule]]\nfreeze = \"all\"\n",
            "schedule[0].when",
            "is needed",
        ),
        (
            "[[schedule]]\nwhen = \"Sat 1am\"\nfreeze = \"all\"\n",
            "schedule[0].when",
            "e.g.",
        ),
        (
            "[[schedule]]\nwhen = [\"Sat 01:00..02:00\", \"Sun 26:00..27:00\"]\nfreeze = \"all\"\n",
            "schedule[0].when[1]",
            "not a time of day",
        ),
        (
            "[[schedule]]\nwhen = \"Sat\"\nfreeze = \"everything\"\n",
            "schedule[0].freeze",
            "\"scale-down\"",
        ),
        (
            "[[schedule]]\nwhen = \"Sat\"\n",
            "schedule[0]",
            "does nothing",
        ),
        (
            "[[schedule]]\nwhen = \"Sat\"\nfreeze = \"all\"\nfloor = { cpu = 2 }\n",
            "schedule[0]",
            "both freeze and floor",
        ),
        (
            "[[schedule]]\nwhen = \"Sat\"\nfloor = { cpu = 0 }\n",
            "schedule[0].floor.cpu",
            "at least 1",
        ),
        (
            "[[schedule]]\nwhen = \"Sat\"\ntimezone = \"Mars/Olympus\"\nfreeze = \"all\"\n",
            "schedule[0].timezone",
            "IANA",
        ),
        (
            "[[schedule]]\nname = \"a\"\nwhen = \"Sat\"\nfreeze = \"all\"\n\n\
             [[schedule]]\nname = \"a\"\nwhen = \"Sun\"\nfreeze = \"all\"\n",
            "schedule[1].name",
            "unique",
        ),
        (
            "[[schedule]]\nwhen = \"Sat\"\ntags = [\"-bad\"]\nfreeze = \"all\"\n",
            "schedule[0].tags[0]",
            "not a Proxmox VE tag",
        ),
    ] {
        let msg = err(&with(extra));
        assert!(msg.contains(key), "{key} not named:\n{msg}");
        assert!(msg.contains(says), "{says:?} not said:\n{msg}");
    }
}

#[test]
fn a_floor_above_the_policy_max_is_a_warning() {
    let (_, warnings) = parse(&with(
        "[[schedule]]\nwhen = \"Mon..Fri 08:00..09:00\"\nfloor = { cpu = 64 }\n",
    ))
    .expect("loads");
    assert!(
        warnings
            .iter()
            .any(|w| w.message().contains("schedule[0].floor.cpu")
                && w.message().contains("max (8)")),
        "{warnings:?}"
    );
}

#[test]
fn a_secret_that_cannot_go_in_a_header_is_refused_at_load_without_showing_it() {
    for bad in ["abc\\u0007def", "abc\\u00e9def", "abc\\ndef"] {
        let text = MINIMAL.replace("token =", &format!("token_secret = \"{bad}\"\ntoken ="));
        let msg = err(&text);
        assert!(
            msg.contains("cluster[0].token_secret: the API token secret from the config file")
                && msg.contains("cannot go in an HTTP header"),
            "{bad}: {msg}"
        );
        assert!(!msg.contains("abc"), "the value is shown: {msg}");
    }
    // A password goes in a form body, where any character may go.
    let text = MINIMAL
        .replace(
            "token = \"pvescale@pve!autoscale\"",
            "user = \"pvescale@pve\"\npassword = \"p\\u00e4ss\"",
        )
        .replace("token_secret", "");
    assert!(parse(&text).is_ok());
    // The Gotify token goes in a header too.
    let msg = err(&with(
        "[notify.gotify]\nurl = \"https://gotify.example.com\"\ntoken = \"ab\\tc\\u001b\"",
    ));
    assert!(msg.contains("cannot go in an HTTP header"), "{msg}");
}

#[test]
fn a_secret_with_surrounding_whitespace_is_warned_about_without_showing_it() {
    let text = MINIMAL.replace("token =", "token_secret = \" abc-secret\"\ntoken =");
    let (_, warnings) = parse(&text).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let message = warnings[0].message();
    assert!(
        message.contains("begins or ends with whitespace") && !message.contains("abc-secret"),
        "{message}"
    );
    let clean = MINIMAL.replace("token =", "token_secret = \"abc-secret\"\ntoken =");
    assert!(parse(&clean).unwrap().1.is_empty());
}

#[test]
fn a_config_or_ca_file_others_could_change_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pvescale.toml");
    let ca = dir.path().join("ca.pem");
    fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let text = MINIMAL.replace("token =", "ca_file = \"ca.pem\"\ntoken =");
    fs::write(&path, &text).unwrap();
    let set =
        |p: &Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    let warnings = || -> Vec<String> {
        let (_, w) = load_with(&path, &env()).unwrap();
        w.iter().map(|w| w.message().to_string()).collect()
    };
    set(&path, 0o640);
    set(&ca, 0o644);
    assert!(warnings().is_empty(), "{:?}", warnings());
    set(&path, 0o664);
    let w = warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("the config file is writable by its group (mode 664)")
            && w[0].contains("chmod go-w"),
        "{w:?}"
    );
    set(&path, 0o600);
    set(&ca, 0o666);
    let w = warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("cluster[0].ca_file:")
            && w[0].contains("ca.pem is writable by every user (mode 666)")
            && w[0].contains("which servers pvescale trusts"),
        "{w:?}"
    );
}

#[test]
fn guest_types_default_to_vms_and_are_checked() {
    use crate::guest::GuestKind::{Ct, Vm};
    let c = ok(MINIMAL);
    assert_eq!(c.selection().types(), &BTreeSet::from([Vm]));
    let tags = ["autoscale".to_string()];
    assert!(c.manages(Vm, 101, &tags, None) && !c.manages(Ct, 200, &tags, None));
    let both = MINIMAL.replace("[select]\n", "[select]\ntypes = [\"ct\", \"vm\", \"ct\"]\n");
    let c = ok(&both);
    assert_eq!(c.selection().types(), &BTreeSet::from([Vm, Ct]));
    assert!(c.manages(Ct, 200, &tags, None));
    let cts = MINIMAL.replace("[select]\n", "[select]\ntypes = [\"ct\"]\n");
    assert!(!ok(&cts).manages(Vm, 101, &tags, None));
    let msg = err(&MINIMAL.replace("[select]\n", "[select]\ntypes = [\"lxc\"]\n"));
    assert!(
        msg.contains("select.types[0]") && msg.contains("\"vm\""),
        "{msg}"
    );
    let msg = err(&MINIMAL.replace("[select]\n", "[select]\ntypes = []\n"));
    assert!(
        msg.contains("select.types") && msg.contains("empty"),
        "{msg}"
    );
}

#[test]
fn an_override_can_be_limited_to_a_guest_type() {
    use crate::guest::GuestKind::{Ct, Vm};
    let text = with(
        "[[override]]\ntypes = [\"ct\"]\nmemory = { max_step_down = 128 }\n\n\
         [[override]]\ntags = [\"db\"]\ntypes = [\"vm\"]\ncpu = { max = 16 }\n",
    );
    let c = ok(&text);
    let db = vec!["db".to_string()];
    assert_eq!(c.policy_for(Ct, 200, &[], None).memory.max_step_down, 128);
    assert_ne!(c.policy_for(Vm, 101, &[], None).memory.max_step_down, 128);
    assert_eq!(c.policy_for(Vm, 101, &db, None).cpu.max, 16);
    assert_ne!(
        c.policy_for(Ct, 200, &db, None).cpu.max,
        16,
        "a db container is not a VM"
    );
    let msg = err(&with(
        "[[override]]\ntypes = [\"lxc\"]\ncpu = { max = 4 }\n",
    ));
    assert!(msg.contains("override[0].types[0]"), "{msg}");
    // Two that share no type never apply together, so together they need not be valid.
    ok(&with(
        "[[override]]\ntypes = [\"ct\"]\ncpu = { min = 8 }\n\n\
         [[override]]\ntypes = [\"vm\"]\ncpu = { max = 4 }\n",
    ));
    let msg = err(&with(
        "[[override]]\ntypes = [\"ct\"]\ncpu = { min = 8 }\n\n\
         [[override]]\ntags = [\"x\"]\ncpu = { max = 4 }\n",
    ));
    assert!(
        msg.contains("override"),
        "a container tagged x gets both: {msg}"
    );
}
