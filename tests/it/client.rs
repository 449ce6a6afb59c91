//! The Proxmox API client (`pvescale::pve::Client`) against the simulated cluster over
//! HTTPS: authentication, TLS modes, retries, timeouts, fallback URLs, error shapes,
//! version differences, metrics and the hotplug rules as `config?current=1` and `pending`
//! show them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::{TOKEN_ID, TOKEN_SECRET, closed_port, cluster, ready_vm, wait_task};
use pvescale::guest::GuestKind;
use pvescale::pve::parallel::map_bounded;
use pvescale::pve::types::{
    ConfigDigest, Consolidation, MetricSample, PendingItem, Timeframe, VmStatus,
};
use pvescale::pve::{
    ApiError, ApiErrorKind, Auth, Client, ClusterTarget, RetryPolicy, TaskOutcome, TlsMode,
};
use pvescale::secret::Secret;
use pvesim::{AuthKind, Fault, NodeSpec, Pattern, Privs, Sim, SimBuilder, VmSpec};

const NODE: &str = "pve1";
const ADMIN: &str = "admin@pam";
const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A running simulator with its CA written to a temporary directory.
struct Lab {
    sim: Sim,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn start(builder: SimBuilder) -> Lab {
        let sim = builder.start().expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = sim.write_ca_file(dir.path()).expect("CA file");
        Lab { sim, ca, _dir: dir }
    }

    /// Token auth, the simulator's CA, a 10 s timeout.
    fn target(&self) -> ClusterTarget {
        ClusterTarget {
            name: "lab".to_string(),
            urls: vec![self.sim.url().to_string()],
            auth: token_auth(TOKEN_SECRET),
            tls: TlsMode::CaFile(self.ca.clone()),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            proxy: None,
        }
    }

    fn client(&self) -> Client {
        client_for(&self.target())
    }
}

fn token_auth(secret: &str) -> Auth {
    Auth::Token {
        id: TOKEN_ID.to_string(),
        secret: Secret::new(secret),
    }
}

fn password_auth(user: &str, password: &str) -> Auth {
    Auth::Password {
        user: user.to_string(),
        password: Secret::new(password),
    }
}

/// Short backoff so that retries do not slow the suite down.
fn quick_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        base_delay: Duration::from_millis(10),
    }
}

fn client_for(target: &ClusterTarget) -> Client {
    Client::with_retry(target, quick_retry(3)).expect("client set up")
}

fn pending_of<'a>(rows: &'a [PendingItem], key: &str) -> Option<&'a PendingItem> {
    rows.iter().find(|r| r.key == key && r.is_pending())
}

fn assert_kind(e: &ApiError, kind: ApiErrorKind) {
    assert_eq!(e.kind, kind, "unexpected error kind: {e} ({e:?})");
}

// ---- authentication ----------------------------------------------------------------------

/// The VM's current config digest, straight from the simulator (no request).
fn sim_digest(sim: &pvesim::Sim, vmid: u32) -> ConfigDigest {
    ConfigDigest::from_server(&sim.vm(vmid).expect("vm").digest).expect("a digest")
}

#[test]
fn token_auth_reads_version_and_resources() {
    let lab = Lab::start(
        cluster()
            .version("9.1")
            .vm(ready_vm(101, NODE))
            .vm(VmSpec::new(102, NODE).running(false))
            .vm(VmSpec::new(200, NODE).lxc()),
    );
    let client = lab.client();
    let version = client.version().expect("version");
    assert_eq!(version.release, "9.1");
    assert_eq!(version.major_minor(), Some((9, 1)));
    let res = client.resources().expect("resources");
    let ids: BTreeSet<(u32, GuestKind)> = res.vms.iter().map(|v| (v.vmid, v.kind)).collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            (101, GuestKind::Vm),
            (102, GuestKind::Vm),
            (200, GuestKind::Ct)
        ])
    );
    assert!(
        res.nodes
            .iter()
            .any(|n| n.node == NODE && n.maxcpu == Some(32.0))
    );
    let requests = lab.sim.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.auth, AuthKind::Token(TOKEN_ID.to_string()), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
    }
}

#[test]
fn ticket_auth_uses_cookie_and_sends_csrf_on_every_write() {
    let lab = Lab::start(
        cluster()
            .user(ADMIN, ADMIN_PASSWORD, Privs::all())
            .vm(ready_vm(101, NODE)),
    );
    let mut target = lab.target();
    target.auth = password_auth(ADMIN, ADMIN_PASSWORD);
    let client = client_for(&target);
    assert_eq!(client.version().expect("version").release, "8.4");
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    let upid = client
        .vm_config_post(NODE, 101, &[("vcpus", "3".to_string())], &cfg.digest)
        .expect("POST config");
    assert!(matches!(wait_task(&client, &upid), TaskOutcome::Ok(_)));
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    assert_eq!(cfg.vcpus, Some(3));
    client
        .vm_config_put(
            NODE,
            101,
            &[("vcpus", "2".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("PUT config");

    let requests = lab.sim.requests();
    assert_eq!(
        lab.sim.count("POST", "/access/ticket"),
        1,
        "one login for the whole session"
    );
    let mut writes = 0;
    for r in requests.iter().filter(|r| r.path != "/access/ticket") {
        assert_eq!(r.auth, AuthKind::Ticket(ADMIN.to_string()), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
        if r.method != "GET" {
            writes += 1;
            assert!(r.csrf_token, "write without CSRFPreventionToken: {r:?}");
        }
    }
    assert_eq!(writes, 2);
    let login = requests
        .iter()
        .find(|r| r.path == "/access/ticket")
        .expect("login recorded");
    assert_eq!(login.method, "POST");
    assert_eq!(login.param("username"), Some(ADMIN));
}

#[test]
fn expired_ticket_leads_to_one_new_login() {
    let lab = Lab::start(
        cluster()
            .user(ADMIN, ADMIN_PASSWORD, Privs::all())
            .vm(ready_vm(101, NODE)),
    );
    let mut target = lab.target();
    target.auth = password_auth(ADMIN, ADMIN_PASSWORD);
    let client = client_for(&target);
    assert!(client.version().is_ok());
    // Tickets are valid for 2 hours.
    lab.sim.advance(Duration::from_secs(2 * 3600 + 60));
    assert!(client.vm_config_current(NODE, 101).is_ok());
    assert_eq!(lab.sim.count("POST", "/access/ticket"), 2);
    let statuses: Vec<u16> = lab
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/config"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![401, 200]);
}

#[test]
fn wrong_password_is_an_auth_error_without_the_password() {
    let lab = Lab::start(cluster().user(ADMIN, ADMIN_PASSWORD, Privs::all()));
    let mut target = lab.target();
    target.auth = password_auth(ADMIN, "not-the-password-4711");
    let err = client_for(&target).version().unwrap_err();
    assert_kind(&err, ApiErrorKind::Auth);
    assert!(err.message.contains(ADMIN), "{err}");
    for text in [format!("{err}"), format!("{err:?}")] {
        assert!(!text.contains("not-the-password-4711"), "{text}");
    }
}

#[test]
fn tfa_user_is_told_to_use_an_api_token() {
    let lab = Lab::start(cluster().user_tfa(ADMIN, ADMIN_PASSWORD, Privs::all()));
    let mut target = lab.target();
    target.auth = password_auth(ADMIN, ADMIN_PASSWORD);
    let err = client_for(&target).version().unwrap_err();
    assert_kind(&err, ApiErrorKind::NeedTfa);
    assert!(err.message.contains("API token"), "{err}");
    assert_eq!(
        lab.sim.count("GET", "/version"),
        0,
        "no API call after a TFA login"
    );
}

#[test]
fn wrong_token_secret_names_the_cause_and_never_shows_the_secret() {
    const WRONG: &str = "0badc0de-dead-beef-0000-wrongsecret1";
    let lab = Lab::start(cluster());
    let mut target = lab.target();
    target.auth = token_auth(WRONG);
    let client = client_for(&target);
    let err = client.version().unwrap_err();
    assert_kind(&err, ApiErrorKind::Auth);
    assert_eq!(err.status(), Some(401));
    assert!(err.message.contains(TOKEN_ID), "{err}");
    assert!(err.message.contains("refused"), "{err}");
    for text in [
        format!("{err}"),
        format!("{err:?}"),
        format!("{client:?}"),
        format!("{target:?}"),
    ] {
        assert!(!text.contains(WRONG), "secret leaked: {text}");
        assert!(!text.contains(TOKEN_SECRET), "secret leaked: {text}");
    }
    // A refused token is not retried.
    assert_eq!(lab.sim.count("GET", "/version"), 1);
    assert_eq!(lab.sim.requests()[0].auth, AuthKind::Invalid);
}

// ---- TLS ---------------------------------------------------------------------------------

#[test]
fn tls_ca_file_of_the_cluster_is_accepted() {
    let lab = Lab::start(cluster());
    assert!(lab.client().version().is_ok());
    assert!(lab.client().warnings().is_empty());
}

#[test]
fn tls_other_ca_is_refused_and_the_presented_fingerprint_is_named() {
    let lab = Lab::start(cluster());
    let other = Lab::start(cluster());
    let mut target = lab.target();
    target.tls = TlsMode::CaFile(other.ca.clone());
    let err = client_for(&target).version().unwrap_err();
    assert_kind(&err, ApiErrorKind::Tls);
    assert!(
        err.message.contains(&lab.sim.fingerprint()),
        "message should name the presented fingerprint {}: {err}",
        lab.sim.fingerprint()
    );
    assert!(lab.sim.requests().is_empty(), "no request after a refusal");
}

#[test]
fn tls_pinned_fingerprint_is_accepted_with_or_without_colons() {
    let lab = Lab::start(cluster());
    let colons = lab.sim.fingerprint();
    assert!(colons.contains(':'));
    let plain = colons.replace(':', "").to_lowercase();
    for pin in [colons, plain] {
        let mut target = lab.target();
        target.tls = TlsMode::Fingerprint(pin.clone());
        let client = client_for(&target);
        assert_eq!(
            client.version().expect(&pin).release,
            "8.4",
            "pin {pin} should be accepted"
        );
    }
}

#[test]
fn tls_wrong_fingerprint_is_refused_naming_both() {
    let lab = Lab::start(cluster());
    let other = Lab::start(cluster());
    let mut target = lab.target();
    target.tls = TlsMode::Fingerprint(other.sim.fingerprint());
    let err = client_for(&target).version().unwrap_err();
    assert_kind(&err, ApiErrorKind::Tls);
    let expected = format!(
        "certificate fingerprint mismatch: server presented {}, config pins {}",
        lab.sim.fingerprint(),
        other.sim.fingerprint()
    );
    assert!(err.message.contains(&expected), "{err}");
    assert!(lab.sim.requests().is_empty());
}

#[test]
fn tls_system_roots_do_not_trust_the_cluster_ca() {
    let lab = Lab::start(cluster());
    let mut target = lab.target();
    target.tls = TlsMode::SystemRoots;
    match Client::with_retry(&target, quick_retry(1)) {
        // No system roots on this machine: refused at setup, also a TLS error.
        Err(e) => assert_kind(&e, ApiErrorKind::Tls),
        Ok(client) => {
            let err = client.version().unwrap_err();
            assert_kind(&err, ApiErrorKind::Tls);
            assert!(err.message.contains(&lab.sim.fingerprint()), "{err}");
            assert!(err.message.contains("ca_file"), "{err}");
        }
    }
    assert!(lab.sim.requests().is_empty());
}

#[test]
fn tls_insecure_works_and_warns() {
    let lab = Lab::start(cluster());
    let mut target = lab.target();
    target.tls = TlsMode::Insecure;
    let client = client_for(&target);
    assert_eq!(client.version().expect("version").release, "8.4");
    assert!(!client.warnings().is_empty());
    assert!(
        client.warnings().iter().any(|w| w.contains("insecure")),
        "{:?}",
        client.warnings()
    );
}

// ---- retries, timeouts, fallback URLs ------------------------------------------------------

#[test]
fn get_is_retried_after_a_transient_500() {
    let lab = Lab::start(cluster());
    lab.sim
        .add_fault(Fault::on("GET", "/version").status(500).times(1));
    let client = lab.client();
    assert_eq!(client.version().expect("second try works").release, "8.4");
    assert_eq!(lab.sim.count("GET", "/version"), 2);
    let statuses: Vec<u16> = lab.sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 200]);
}

#[test]
fn get_is_retried_after_596() {
    let lab = Lab::start(cluster());
    lab.sim
        .add_fault(Fault::on("GET", "/cluster/resources").status(596).times(2));
    let client = lab.client();
    assert!(client.resources().is_ok());
    assert_eq!(lab.sim.count("GET", "/cluster/resources"), 3);
}

#[test]
fn get_failing_more_often_than_the_attempts_is_an_error() {
    let lab = Lab::start(cluster());
    lab.sim
        .add_fault(Fault::on("GET", "/version").status(500).forever());
    let client = Client::with_retry(&lab.target(), quick_retry(3)).expect("client");
    let err = client.version().unwrap_err();
    assert_kind(&err, ApiErrorKind::Server);
    assert!(err.endpoint.contains("/version"), "{err}");
    assert_eq!(lab.sim.count("GET", "/version"), 3);
}

#[test]
fn post_answered_596_after_apply_is_not_retried_and_outcome_unknown() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE)));
    let client = lab.client();
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    assert_eq!(cfg.vcpus, Some(2));
    let path = "/nodes/pve1/qemu/101/config";
    lab.sim.add_fault(
        Fault::on("POST", path)
            .status(596)
            .after_apply(true)
            .times(1),
    );
    let err = client
        .vm_config_post(NODE, 101, &[("vcpus", "4".to_string())], &cfg.digest)
        .unwrap_err();
    assert_kind(&err, ApiErrorKind::Unreachable);
    assert!(err.outcome_unknown, "{err:?}");
    assert!(format!("{err}").contains("outcome unknown"), "{err}");
    assert_eq!(lab.sim.count("POST", path), 1, "a write is never retried");
    // The change was made: re-reading shows it once the task ran.
    assert!(lab.sim.wait_tasks(Duration::from_secs(10)));
    let after = client.vm_config_current(NODE, 101).expect("config");
    assert_eq!(after.vcpus, Some(4));
    assert_ne!(after.digest, cfg.digest);
    assert_eq!(lab.sim.count("POST", path), 1);
}

#[test]
fn get_times_out() {
    let lab = Lab::start(cluster());
    lab.sim
        .add_fault(Fault::on("GET", "/version").hang(Duration::from_secs(5)));
    let mut target = lab.target();
    target.timeout = Duration::from_secs(1);
    let client = Client::with_retry(&target, quick_retry(1)).expect("client");
    let err = client.version().unwrap_err();
    assert_kind(&err, ApiErrorKind::Timeout);
    assert!(!err.outcome_unknown, "a GET changes nothing");
    assert_eq!(lab.sim.count("GET", "/version"), 1);
}

#[test]
fn get_is_retried_after_a_timeout() {
    let lab = Lab::start(cluster());
    lab.sim.add_fault(
        Fault::on("GET", "/version")
            .hang(Duration::from_secs(5))
            .times(1),
    );
    let mut target = lab.target();
    target.timeout = Duration::from_secs(1);
    let client = Client::with_retry(&target, quick_retry(2)).expect("client");
    assert_eq!(client.version().expect("second try").release, "8.4");
    assert_eq!(lab.sim.count("GET", "/version"), 2);
}

#[test]
fn post_timeout_is_outcome_unknown_and_not_retried() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE)));
    let path = "/nodes/pve1/qemu/101/config";
    lab.sim
        .add_fault(Fault::on("POST", path).hang(Duration::from_secs(5)));
    let mut target = lab.target();
    target.timeout = Duration::from_secs(1);
    let client = Client::with_retry(&target, quick_retry(3)).expect("client");
    let err = client
        .vm_config_post(
            NODE,
            101,
            &[("vcpus", "4".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .unwrap_err();
    assert_kind(&err, ApiErrorKind::Timeout);
    assert!(err.outcome_unknown, "{err:?}");
    assert_eq!(lab.sim.count("POST", path), 1);
}

#[test]
fn fallback_url_is_used_when_the_first_does_not_answer() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE)));
    let mut target = lab.target();
    target.urls = vec![
        format!("https://127.0.0.1:{}", closed_port()),
        lab.sim.url().to_string(),
    ];
    let client = client_for(&target);
    assert_eq!(client.version().expect("via fallback").release, "8.4");
    let res = client.resources().expect("resources via fallback");
    assert_eq!(res.vms.len(), 1);
    assert_eq!(lab.sim.count("GET", "/version"), 1);
}

#[test]
fn only_dead_urls_is_a_connect_error() {
    let mut target = ClusterTarget {
        name: "lab".to_string(),
        urls: vec![
            format!("https://127.0.0.1:{}", closed_port()),
            format!("https://127.0.0.1:{}", closed_port()),
        ],
        auth: token_auth(TOKEN_SECRET),
        tls: TlsMode::Insecure,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        proxy: None,
    };
    let err = Client::with_retry(&target, quick_retry(1))
        .expect("client")
        .version()
        .unwrap_err();
    assert_kind(&err, ApiErrorKind::Connect);
    assert!(err.message.contains("fallback"), "{err}");
    target.urls.clear();
    assert!(Client::new(&target).is_err(), "no URL at all is refused");
}

// ---- error shapes ------------------------------------------------------------------------

#[test]
fn missing_privilege_is_403_with_proxmox_message() {
    for version in ["8.0", "8.4", "9.1"] {
        let lab = Lab::start(
            cluster()
                .version(version)
                .token(
                    TOKEN_ID,
                    TOKEN_SECRET,
                    Privs::pvescale().without("VM.Config.Memory"),
                )
                .vm(ready_vm(101, NODE)),
        );
        let client = lab.client();
        let err = client
            .vm_config_post(
                NODE,
                101,
                &[("memory", "8192".to_string())],
                &sim_digest(&lab.sim, 101),
            )
            .unwrap_err();
        assert_kind(&err, ApiErrorKind::Permission);
        assert_eq!(err.status(), Some(403));
        assert!(
            err.message
                .contains("Permission check failed (/vms/101, VM.Config.Memory)"),
            "PVE {version}: {err}"
        );
        assert!(!err.outcome_unknown);
        // CPU is still allowed.
        assert!(
            client
                .vm_config_post(
                    NODE,
                    101,
                    &[("vcpus", "3".to_string())],
                    &sim_digest(&lab.sim, 101)
                )
                .is_ok()
        );
    }
}

#[test]
fn unknown_parameter_is_400_with_param_errors() {
    for version in ["8.0", "9.1"] {
        let lab = Lab::start(cluster().version(version).vm(ready_vm(101, NODE)));
        let err = lab
            .client()
            .vm_config_post(
                NODE,
                101,
                &[("vcpus", "3".to_string()), ("bogus", "1".to_string())],
                &sim_digest(&lab.sim, 101),
            )
            .unwrap_err();
        assert_kind(&err, ApiErrorKind::BadRequest);
        assert!(
            err.message.contains("Parameter verification failed"),
            "PVE {version}: {err}"
        );
        assert_eq!(err.param_errors.len(), 1, "{err:?}");
        assert_eq!(err.param_errors[0].0, "bogus");
        assert!(
            err.param_errors[0].1.contains("not defined in schema"),
            "{err:?}"
        );
        assert!(format!("{err}").contains("bogus"), "{err}");
        assert_eq!(lab.sim.count("POST", "/nodes"), 1);
    }
}

#[test]
fn locked_vm_is_reported_in_every_version() {
    // 8.0-8.3 send no JSON message: the text is only in the HTTP reason phrase.
    for version in ["8.0", "8.3", "8.4", "9.1"] {
        let lab = Lab::start(
            cluster()
                .version(version)
                .vm(ready_vm(101, NODE).lock("backup")),
        );
        let err = lab
            .client()
            .vm_config_post(
                NODE,
                101,
                &[("vcpus", "3".to_string())],
                &sim_digest(&lab.sim, 101),
            )
            .unwrap_err();
        assert_kind(&err, ApiErrorKind::Server);
        assert!(err.is_locked(), "PVE {version}: {err}");
        assert!(
            err.message.contains("VM is locked (backup)"),
            "PVE {version}: {err}"
        );
        assert!(!err.is_digest_mismatch());
        assert_eq!(lab.sim.count("POST", "/nodes"), 1, "writes are not retried");
    }
}

#[test]
fn stale_digest_is_a_digest_mismatch() {
    for version in ["8.0", "8.4"] {
        let lab = Lab::start(cluster().version(version).vm(ready_vm(101, NODE)));
        let client = lab.client();
        let cfg = client.vm_config_current(NODE, 101).expect("config");
        assert!(!cfg.digest.as_str().is_empty());
        assert!(lab.sim.update_vm(101, |vm| {
            vm.config.insert(
                "description".to_string(),
                "edited by someone else".to_string(),
            );
        }));
        let err = client
            .vm_config_post(NODE, 101, &[("vcpus", "3".to_string())], &cfg.digest)
            .unwrap_err();
        assert_kind(&err, ApiErrorKind::Server);
        assert!(err.is_digest_mismatch(), "PVE {version}: {err}");
        assert!(!err.is_locked());
        // With the fresh digest the write goes through.
        let fresh = client.vm_config_current(NODE, 101).expect("config");
        assert_ne!(fresh.digest, cfg.digest);
        let upid = client
            .vm_config_post(NODE, 101, &[("vcpus", "3".to_string())], &fresh.digest)
            .expect("write with fresh digest");
        assert!(matches!(wait_task(&client, &upid), TaskOutcome::Ok(_)));
    }
}

#[test]
fn unknown_path_is_501_not_implemented() {
    let lab = Lab::start(cluster());
    let err = lab
        .client()
        .get::<serde_json::Value>("/nope", &[])
        .unwrap_err();
    assert_kind(&err, ApiErrorKind::NotImplemented);
    assert_eq!(err.status(), Some(501));
    assert!(err.endpoint.contains("/nope"), "{err}");
    assert!(err.message.contains("not implemented"), "{err}");
    assert_eq!(lab.sim.count("GET", "/nope"), 1, "501 is not retried");
}

#[test]
fn missing_vm_is_a_server_error() {
    let lab = Lab::start(cluster());
    let err = lab.client().vm_config_current(NODE, 999).unwrap_err();
    assert_kind(&err, ApiErrorKind::Server);
    assert!(err.is_missing_vm(), "{err}");
}

#[test]
fn metrics_export_is_not_implemented_before_8_2_5() {
    let lab = Lab::start(cluster().version("8.2.4").vm(ready_vm(101, NODE)));
    let client = lab.client();
    assert!(!client.version().expect("version").has_metrics_export());
    let err = client
        .metrics_export(lab.sim.now() as u64 - 60, |_| {})
        .unwrap_err();
    assert_kind(&err, ApiErrorKind::NotImplemented);

    let lab = Lab::start(cluster().version("8.2.5").vm(ready_vm(101, NODE)));
    let client = lab.client();
    assert!(client.version().expect("version").has_metrics_export());
    assert!(
        client
            .metrics_export(lab.sim.now() as u64 - 60, |_| {})
            .expect("export")
            > 0
    );
}

// ---- version differences -----------------------------------------------------------------

#[test]
fn configs_of_pve_8_0_and_9_1_parse_alike() {
    // (release, memory as the config holds it, JSON type on the wire)
    for (version, memory, as_string) in [
        ("8.0", "4096", false),
        ("8.4", "current=4096", true),
        ("9.1", "current=4096", true),
    ] {
        let lab = Lab::start(
            cluster().version(version).vm(ready_vm(101, NODE)
                .config("memory", memory)
                .balloon_mib(1024)),
        );
        let client = lab.client();
        let raw: serde_json::Value = client
            .get(
                "/nodes/pve1/qemu/101/config",
                &[("current", "1".to_string())],
            )
            .expect("raw config");
        assert_eq!(raw["memory"].is_string(), as_string, "PVE {version}: {raw}");
        let cfg = client.vm_config_current(NODE, 101).expect("config");
        assert_eq!(cfg.memory, Some(4096), "PVE {version}");
        assert_eq!(cfg.balloon, Some(1024));
        assert_eq!((cfg.sockets(), cfg.cores(), cfg.vcpus()), (1, 8, 2));
        assert!(cfg.numa && cfg.cpu_hotplug() && cfg.memory_hotplug());
        assert_eq!(cfg.name.as_deref(), Some("vm101"));
        assert_eq!(cfg.tags.as_deref(), Some("autoscale"));
        assert_eq!(cfg.digest.as_str(), lab.sim.vm(101).expect("vm").digest);
        let pending = client.vm_pending(NODE, 101).expect("pending");
        assert!(pending.iter().any(|p| p.key == "memory"));
        assert!(pending.iter().all(|p| !p.is_pending()));
    }
}

#[test]
fn resources_parse_in_8_0_and_9_1_and_missing_metrics_are_none() {
    for version in ["8.0", "9.1"] {
        let lab = Lab::start(
            cluster()
                .version(version)
                .node(NodeSpec::new("pve2").online(false))
                .vm(ready_vm(101, NODE).cpu_load(Pattern::Constant(1.0)))
                .vm(VmSpec::new(102, NODE).running(false))
                .vm(VmSpec::new(103, "pve2"))
                .vm(VmSpec::new(200, NODE).lxc()),
        );
        let res = lab.client().resources().expect("resources");
        let ct = res.vms.iter().find(|v| v.vmid == 200);
        assert_eq!(
            ct.map(|v| v.kind),
            Some(GuestKind::Ct),
            "lxc is listed as a container"
        );
        let vm = |id: u32| {
            res.vms
                .iter()
                .find(|v| v.vmid == id)
                .unwrap_or_else(|| panic!("vm {id} listed"))
        };
        let running = vm(101);
        assert_eq!(running.status, VmStatus::Running);
        assert_eq!(running.maxcpu, Some(2.0));
        assert_eq!(running.maxmem, Some(4096 << 20));
        let cpu = running.cpu.expect("cpu of a running VM");
        assert!((cpu - 0.5).abs() < 1e-6, "1 busy core of 2: {cpu}");
        assert!(running.mem.is_some_and(|m| m > 0));
        assert!(running.uptime.is_some_and(|u| u > 0));
        assert_eq!(running.tags, vec!["autoscale".to_string()]);
        assert_eq!(
            running.memhost.is_some(),
            version == "9.1",
            "memhost only on PVE 9"
        );

        let stopped = vm(102);
        assert_eq!(stopped.status, VmStatus::Stopped);
        assert_eq!(stopped.memhost, None, "no host memory for a stopped VM");

        let unknown = vm(103);
        assert_eq!(unknown.status, VmStatus::Unknown("unknown".to_string()));
        assert_eq!(unknown.cpu, None);
        assert_eq!(unknown.mem, None);
        assert_eq!(unknown.maxcpu, None);
        assert_eq!(unknown.maxmem, None);
        assert_eq!(unknown.uptime, None);

        let online = res.nodes.iter().find(|n| n.node == NODE).expect("pve1");
        assert!(online.cpu.is_some() && online.maxmem == Some(131072 << 20));
        let offline = res.nodes.iter().find(|n| n.node == "pve2").expect("pve2");
        assert_eq!((offline.cpu, offline.mem), (None, None));
    }
}

#[test]
fn node_status_and_vm_status_parse() {
    for version in ["8.0", "9.1"] {
        let lab = Lab::start(
            cluster()
                .version(version)
                .vm(ready_vm(101, NODE))
                .vm(ready_vm(102, NODE).balloon_stats(false)),
        );
        let client = lab.client();
        let node = client.node_status(NODE).expect("node status");
        assert_eq!(node.cpuinfo.and_then(|c| c.cpus), Some(32));
        let mem = node.memory.expect("memory");
        assert_eq!(mem.total, Some(131072 << 20));
        assert!(mem.used.is_some_and(|u| u > 0) && mem.free.is_some());
        assert!(node.cpu.is_some());
        let with_stats = client.vm_status_current(NODE, 101).expect("status");
        assert_eq!(with_stats.status.as_deref(), Some("running"));
        assert!(with_stats.has_guest_memory_stats());
        let without = client.vm_status_current(NODE, 102).expect("status");
        assert!(!without.has_guest_memory_stats());
    }
}

// ---- metrics -----------------------------------------------------------------------------

#[test]
fn metrics_export_returns_the_window_only() {
    for version in ["8.4", "9.1"] {
        let lab = Lab::start(
            cluster()
                .version(version)
                .vm(ready_vm(101, NODE).cpu_load(Pattern::Constant(1.0)))
                .vm(VmSpec::new(102, NODE).running(false))
                .vm(VmSpec::new(200, NODE).lxc()),
        );
        lab.sim.advance(Duration::from_secs(1800));
        let now = lab.sim.now() as u64;
        let start = now - 120;
        let mut samples: Vec<MetricSample> = Vec::new();
        let count = lab
            .client()
            .metrics_export(start, |s| samples.push(s))
            .expect("metrics");
        assert_eq!(count as usize, samples.len());
        assert!(!samples.is_empty());
        for s in &samples {
            assert!(
                s.timestamp >= start && s.timestamp <= now,
                "sample outside the window [{start}, {now}]: {s:?}"
            );
        }
        // The sim holds 30 minutes of history: anything older than `start` was left out.
        let stamps: BTreeSet<u64> = samples.iter().map(|s| s.timestamp).collect();
        assert!(stamps.len() >= 11 && stamps.len() <= 13, "{stamps:?}");
        let of = |id: &str, metric: &str| -> Vec<f64> {
            samples
                .iter()
                .filter(|s| s.id == id && s.metric == metric)
                .map(|s| s.value)
                .collect()
        };
        let cpu = of("qemu/101", "cpu_current");
        assert_eq!(cpu.len(), stamps.len());
        assert!(cpu.iter().all(|c| (c - 0.5).abs() < 1e-6), "{cpu:?}");
        assert!(of("qemu/101", "cpu_max").iter().all(|m| *m == 2.0));
        let mem = of("qemu/101", "mem_used");
        assert_eq!(mem.len(), stamps.len());
        assert!(mem.iter().all(|m| *m > 0.0 && *m <= 4096.0 * 1048576.0));
        // A stopped VM has a size but no usage samples.
        assert!(!of("qemu/102", "cpu_max").is_empty());
        assert!(of("qemu/102", "cpu_current").is_empty());
        assert!(of("qemu/102", "mem_used").is_empty());
        assert!(samples.iter().any(|s| s.id == "node/pve1"));
        let rec = lab.sim.requests();
        let call = rec
            .iter()
            .find(|r| r.path == "/cluster/metrics/export")
            .expect("recorded");
        assert_eq!(call.param("start-time"), Some(start.to_string().as_str()));
        assert_eq!(call.param("history"), Some("1"));
    }
}

#[test]
fn rrddata_hour_matches_the_version_layout() {
    // (release, points in `hour`, points in `day`)
    for (version, hour_points, day_points) in [("8.4", 70, 70), ("9.1", 60, 1440)] {
        let lab = Lab::start(
            cluster()
                .version(version)
                .vm(ready_vm(101, NODE).cpu_load(Pattern::Constant(1.0)))
                .vm(VmSpec::new(102, NODE).running(false)),
        );
        lab.sim.advance(Duration::from_secs(7200));
        let now = lab.sim.now() as u64;
        let client = lab.client();
        let points = client
            .rrddata(NODE, 101, Timeframe::Hour, Consolidation::Average)
            .expect("rrddata");
        assert_eq!(points.len(), hour_points, "PVE {version}");
        let times: Vec<u64> = points.iter().map(|p| p.time.expect("time")).collect();
        assert!(times.windows(2).all(|w| w[1] == w[0] + 60), "60 s steps");
        let last = *times.last().expect("points");
        assert!(last <= now && last + 60 > now, "newest point is current");
        assert!(times[0] + 60 * hour_points as u64 > now);
        // The last hour of points is there, with the figures of a running VM.
        let last_hour: Vec<_> = points
            .iter()
            .filter(|p| p.time.is_some_and(|t| t + 3600 > now))
            .collect();
        assert!(last_hour.len() >= 59);
        for p in &last_hour {
            let cpu = p.cpu.expect("cpu");
            assert!((cpu - 0.5).abs() < 1e-6, "{p:?}");
            assert_eq!(p.maxcpu, Some(2.0));
            assert_eq!(p.maxmem, Some((4096u64 << 20) as f64));
            assert!(p.mem.is_some());
            assert_eq!(p.memhost.is_some(), version == "9.1", "{p:?}");
        }
        let max = client
            .rrddata(NODE, 101, Timeframe::Hour, Consolidation::Max)
            .expect("rrddata MAX");
        assert_eq!(max.len(), hour_points);
        let day = client
            .rrddata(NODE, 101, Timeframe::Day, Consolidation::Average)
            .expect("rrddata day");
        assert_eq!(day.len(), day_points, "PVE {version}");
        // A stopped VM: the points exist, the figures are absent (None, not 0).
        let stopped = client
            .rrddata(NODE, 102, Timeframe::Hour, Consolidation::Average)
            .expect("rrddata of a stopped VM");
        assert_eq!(stopped.len(), hour_points);
        assert!(stopped.iter().all(|p| p.time.is_some()));
        assert!(stopped.iter().all(|p| p.cpu.is_none() && p.mem.is_none()));
        let rec = lab.sim.requests();
        assert!(
            rec.iter()
                .any(|r| r.param("timeframe") == Some("hour") && r.param("cf") == Some("AVERAGE"))
        );
        assert!(rec.iter().any(|r| r.param("cf") == Some("MAX")));
    }
}

// ---- hotplug rules through config?current=1 and pending --------------------------------

#[test]
fn vcpus_apply_live_with_cpu_hotplug() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE)));
    let client = lab.client();
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    let upid = client
        .vm_config_post(NODE, 101, &[("vcpus", "6".to_string())], &cfg.digest)
        .expect("POST");
    assert!(upid.starts_with("UPID:pve1:"), "{upid}");
    assert_eq!(wait_task(&client, &upid), TaskOutcome::Ok("OK".to_string()));
    let after = client.vm_config_current(NODE, 101).expect("config");
    assert_eq!(after.vcpus, Some(6));
    assert_ne!(after.digest, cfg.digest, "digest changes on every write");
    let pending = client.vm_pending(NODE, 101).expect("pending");
    assert!(pending_of(&pending, "vcpus").is_none(), "{pending:?}");
    // More than sockets × cores: the task fails, the value stays pending.
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[("vcpus", "9".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("POST");
    assert!(matches!(wait_task(&client, &upid), TaskOutcome::Failed(_)));
    assert_eq!(
        client.vm_config_current(NODE, 101).expect("config").vcpus,
        Some(6)
    );
    let pending = client.vm_pending(NODE, 101).expect("pending");
    assert_eq!(
        pending_of(&pending, "vcpus").and_then(|p| p.pending.as_deref()),
        Some("9")
    );
}

#[test]
fn vcpus_without_cpu_hotplug_stay_pending() {
    let lab = Lab::start(cluster().vm(VmSpec::new(101, NODE).cores(4).vcpus(2)));
    let client = lab.client();
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    assert!(!cfg.cpu_hotplug());
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[("vcpus", "3".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("POST");
    assert!(matches!(wait_task(&client, &upid), TaskOutcome::Ok(_)));
    assert_eq!(
        client.vm_config_current(NODE, 101).expect("config").vcpus,
        Some(2)
    );
    let pending = client.vm_pending(NODE, 101).expect("pending");
    assert_eq!(
        pending_of(&pending, "vcpus").and_then(|p| p.pending.as_deref()),
        Some("3")
    );
}

#[test]
fn cores_change_stays_pending_on_a_running_vm() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE)));
    let client = lab.client();
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[("cores", "4".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("POST");
    assert_eq!(wait_task(&client, &upid), TaskOutcome::Ok("OK".to_string()));
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    assert_eq!(cfg.cores, Some(8), "current config keeps the old cores");
    let pending = client.vm_pending(NODE, 101).expect("pending");
    let row = pending_of(&pending, "cores").expect("cores pending");
    assert_eq!(row.value.as_deref(), Some("8"));
    assert_eq!(row.pending.as_deref(), Some("4"));
    // The merged config (without current=1) shows the pending value.
    let merged: serde_json::Value = client
        .get("/nodes/pve1/qemu/101/config", &[])
        .expect("merged config");
    assert_eq!(merged["cores"], serde_json::json!(4));
}

#[test]
fn memory_hotplug_rounds_to_the_dimm_grid() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE)));
    let client = lab.client();
    // Adding rounds up: 5000 → 5120 (1024 + 8 × 512).
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[("memory", "5000".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("POST");
    assert!(matches!(wait_task(&client, &upid), TaskOutcome::Ok(_)));
    assert_eq!(
        client.vm_config_current(NODE, 101).expect("config").memory,
        Some(5120)
    );
    // Removing rounds down: 3000 → 2560.
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[("memory", "3000".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("POST");
    assert!(matches!(wait_task(&client, &upid), TaskOutcome::Ok(_)));
    assert_eq!(
        client.vm_config_current(NODE, 101).expect("config").memory,
        Some(2560)
    );
    let pending = client.vm_pending(NODE, 101).expect("pending");
    assert!(pending_of(&pending, "memory").is_none(), "{pending:?}");
}

#[test]
fn memory_without_hotplug_stays_pending_and_revert_drops_it() {
    let lab = Lab::start(cluster().vm(VmSpec::new(101, NODE).memory_mib(2048)));
    let client = lab.client();
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[("memory", "4096".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("POST");
    assert_eq!(wait_task(&client, &upid), TaskOutcome::Ok("OK".to_string()));
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    assert_eq!(cfg.memory, Some(2048));
    let pending = client.vm_pending(NODE, 101).expect("pending");
    let row = pending_of(&pending, "memory").expect("memory pending");
    assert_eq!(row.pending.as_deref(), Some("4096"));

    client
        .vm_revert(NODE, 101, &["memory"], &cfg.digest)
        .expect("revert");
    let pending = client.vm_pending(NODE, 101).expect("pending");
    assert!(pending_of(&pending, "memory").is_none(), "{pending:?}");
    assert_eq!(
        client.vm_config_current(NODE, 101).expect("config").memory,
        Some(2048)
    );
    assert!(!lab.sim.vm(101).expect("vm").has_pending());
    let put = lab
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .expect("PUT recorded");
    assert_eq!(put.param("revert"), Some("memory"));
    assert_eq!(put.param("digest"), Some(cfg.digest.as_str()));
}

#[test]
fn refused_memory_unplug_fails_the_task_and_leaves_the_target_pending() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE).memory_mib(8192).refuse_mem_unplug(1)));
    let client = lab.client();
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[("memory", "4096".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("POST");
    match wait_task(&client, &upid) {
        TaskOutcome::Failed(text) => {
            assert!(text.contains("error unplug memory module"), "{text}")
        }
        other => panic!("expected a failed task, got {other:?}"),
    }
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    let now = cfg.memory.expect("memory");
    assert!(now < 8192 && now > 4096, "partial progress written: {now}");
    let pending = client.vm_pending(NODE, 101).expect("pending");
    let row = pending_of(&pending, "memory").expect("target left pending");
    assert_eq!(row.pending.as_deref(), Some("4096"));
}

#[test]
fn refused_unplug_set_later_through_update_vm() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE).memory_mib(6144)));
    assert!(lab.sim.update_vm(101, |vm| vm.refuse_mem_unplug = Some(0)));
    let client = lab.client();
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[("memory", "4096".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("POST");
    assert!(matches!(wait_task(&client, &upid), TaskOutcome::Failed(_)));
    assert_eq!(
        client.vm_config_current(NODE, 101).expect("config").memory,
        Some(6144)
    );
    let pending = client.vm_pending(NODE, 101).expect("pending");
    assert!(pending_of(&pending, "memory").is_some());
}

#[test]
fn stopped_vm_applies_everything_at_once() {
    let lab = Lab::start(cluster().vm(VmSpec::new(101, NODE).running(false)));
    let client = lab.client();
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[
                ("cores", "4".to_string()),
                ("memory", "3000".to_string()),
                ("balloon", "1024".to_string()),
            ],
            &sim_digest(&lab.sim, 101),
        )
        .expect("POST");
    assert!(matches!(wait_task(&client, &upid), TaskOutcome::Ok(_)));
    let cfg = client.vm_config_current(NODE, 101).expect("config");
    assert_eq!(
        (cfg.cores, cfg.memory, cfg.balloon),
        (Some(4), Some(3000), Some(1024))
    );
    let pending = client.vm_pending(NODE, 101).expect("pending");
    assert!(pending.iter().all(|p| !p.is_pending()), "{pending:?}");
}

#[test]
fn balloon_above_memory_is_refused() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE)));
    let err = lab
        .client()
        .vm_config_post(
            NODE,
            101,
            &[("balloon", "8192".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .unwrap_err();
    assert_kind(&err, ApiErrorKind::Server);
    assert!(err.message.contains("balloon"), "{err}");
}

// ---- parallelism -------------------------------------------------------------------------

#[test]
fn per_vm_calls_run_bounded_over_few_connections() {
    let mut builder = cluster().latency(Duration::from_millis(20));
    let vmids: Vec<u32> = (101..121).collect();
    for id in &vmids {
        builder = builder.vm(ready_vm(*id, NODE).vcpus(1 + id % 8));
    }
    let lab = Lab::start(builder);
    let client = lab.client();
    let results = map_bounded(&vmids, 8, |id| client.vm_config_current(NODE, *id));
    assert_eq!(results.len(), 20);
    for (id, result) in vmids.iter().zip(&results) {
        let cfg = result.as_ref().expect("config");
        assert_eq!(
            cfg.vcpus,
            Some(u64::from(1 + id % 8)),
            "results in item order"
        );
        assert_eq!(cfg.name.as_deref(), Some(format!("vm{id}").as_str()));
    }
    let requests = lab.sim.requests();
    assert_eq!(requests.len(), 20);
    let conns: BTreeSet<u64> = requests.iter().map(|r| r.conn).collect();
    assert!(
        conns.len() <= 9,
        "{} connections for 8 workers: {conns:?}",
        conns.len()
    );
    assert!(conns.len() > 1, "the calls ran in parallel");
}

#[test]
fn fallback_url_is_used_for_a_first_write() {
    let lab = Lab::start(cluster().vm(ready_vm(101, NODE)));
    let mut target = lab.target();
    target.urls = vec![
        format!("https://127.0.0.1:{}", closed_port()),
        lab.sim.url().to_string(),
    ];
    let client = client_for(&target);
    let upid = client
        .vm_config_post(
            NODE,
            101,
            &[("vcpus", "3".to_string())],
            &sim_digest(&lab.sim, 101),
        )
        .expect("a refused connection proves the write was never sent: try the next URL");
    assert!(matches!(wait_task(&client, &upid), TaskOutcome::Ok(_)));
    assert_eq!(lab.sim.count("POST", "/nodes/pve1/qemu/101/config"), 1);
}

#[test]
fn fallback_url_works_with_ticket_login() {
    let lab = Lab::start(cluster().user(ADMIN, ADMIN_PASSWORD, Privs::all()));
    let mut target = lab.target();
    target.auth = password_auth(ADMIN, ADMIN_PASSWORD);
    target.urls = vec![
        format!("https://127.0.0.1:{}", closed_port()),
        lab.sim.url().to_string(),
    ];
    let client = client_for(&target);
    assert_eq!(client.version().expect("login via fallback").release, "8.4");
    assert_eq!(lab.sim.count("POST", "/access/ticket"), 1);
}
