//! The metrics file's view of the API and of the notification channels (issue 19): requests
//! by outcome, their time and bytes, the metrics source, delivery per channel and the last
//! success, checked line by line against the simulated cluster with latency and faults
//! injected. The counts must match the simulator's own record of the requests.

use std::fs;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use crate::notify::Receiver;
use pvesim::Recorded;

/// An environment whose runs write `pvescale.prom`, with `extra` TOML after the selection.
fn env_with_metrics(builder: pvesim::SimBuilder, extra: &str) -> TestEnv {
    let env = TestEnv::start(builder, "");
    env.write_config(&format!("[select]\ntags = [\"autoscale\"]\n\n{extra}"));
    // metrics_file is a top-level key: it goes before the tables.
    let text = fs::read_to_string(env.config_path()).expect("config");
    let metrics = env.path("pvescale.prom");
    write_private(
        &env.config_path(),
        &format!("metrics_file = \"{}\"\n{text}", metrics.display()),
    );
    env
}

fn textfile(env: &TestEnv) -> String {
    fs::read_to_string(env.path("pvescale.prom")).expect("metrics file")
}

/// The sample lines of one family (`name{...} v` or `name v`), in file order.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// The value of the one sample line `line_start ... value`.
fn value(text: &str, line_start: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no line {line_start}:\n{text}"));
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {line}"))
}

/// The request lines pvescale must write for cluster `lab`, from the simulator's record:
/// 200 → ok, 401/403 → auth, other 4xx → client_error, 5xx → server_error.
fn expected_request_lines(requests: &[Recorded]) -> Vec<String> {
    let count = |f: &dyn Fn(u16) -> bool| requests.iter().filter(|r| f(r.status)).count();
    let counts = [
        ("ok", count(&|s| s == 200)),
        (
            "client_error",
            count(&|s| (400..500).contains(&s) && s != 401 && s != 403),
        ),
        ("server_error", count(&|s| s >= 500)),
        ("timeout", 0),
        ("tls", 0),
        ("auth", count(&|s| s == 401 || s == 403)),
        ("connect", 0),
    ];
    counts
        .iter()
        .map(|(outcome, n)| {
            format!("pvescale_api_requests{{cluster=\"lab\",outcome=\"{outcome}\"}} {n}")
        })
        .collect()
}

const LATENCY: Duration = Duration::from_millis(400);

#[test]
fn requests_are_counted_by_outcome_and_timed_with_latency_and_a_500_injected() {
    let env = env_with_metrics(cluster().vm(busy_vm(101, "pve1")), "");
    assert_eq!(run_in_a_minute(&env).code, 0);
    minute(&env);
    env.sim.clear_requests();
    env.sim.add_fault(
        Fault::on("GET", "/cluster/resources")
            .latency(LATENCY)
            .times(1),
    );
    env.sim.add_fault(
        Fault::on("GET", "/cluster/metrics/export")
            .status(500)
            .times(1),
    );
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let text = textfile(&env);
    let requests = env.sim.requests();
    assert!(
        requests.iter().any(|r| r.status == 500),
        "the 500 was answered: {requests:#?}"
    );
    assert_eq!(
        samples(&text, "pvescale_api_requests"),
        expected_request_lines(&requests),
        "{text}"
    );
    // The 500 was retried: one failed and one good export.
    assert!(
        text.contains("pvescale_api_requests{cluster=\"lab\",outcome=\"server_error\"} 1\n"),
        "{text}"
    );
    let slowest = value(&text, "pvescale_api_request_seconds_max{cluster=\"lab\"}");
    let sum = value(&text, "pvescale_api_time_seconds{cluster=\"lab\"}");
    assert!(
        slowest >= LATENCY.as_secs_f64(),
        "slowest {slowest}:\n{text}"
    );
    assert!(sum >= slowest, "sum {sum} < slowest {slowest}");
    let bodies: usize = requests.iter().map(|r| r.response_bytes).sum();
    let received = value(&text, "pvescale_api_received_bytes{cluster=\"lab\"}");
    assert!(
        received > bodies as f64,
        "{received} bytes, bodies {bodies}"
    );
    assert_eq!(
        samples(&text, "pvescale_metrics_source"),
        vec!["pvescale_metrics_source{cluster=\"lab\",source=\"export\",reason=\"complete\"} 1"],
    );
    for help in [
        "# HELP pvescale_api_requests ",
        "# TYPE pvescale_api_requests gauge",
        "# TYPE pvescale_api_request_seconds_max gauge",
        "# TYPE pvescale_metrics_source gauge",
    ] {
        assert!(text.contains(help), "{help}:\n{text}");
    }
}

#[test]
fn a_refused_token_counts_as_auth_and_the_fallback_source_says_why() {
    let env = env_with_metrics(cluster().vm(busy_vm(101, "pve1")), "");
    assert_eq!(run_in_a_minute(&env).code, 0);
    minute(&env);
    env.sim.clear_requests();
    env.sim.add_fault(
        Fault::on("GET", "/cluster/metrics/export")
            .status(401)
            .times(1),
    );
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let text = textfile(&env);
    let requests = env.sim.requests();
    assert_eq!(
        samples(&text, "pvescale_api_requests"),
        expected_request_lines(&requests),
        "{text}"
    );
    assert!(
        text.contains("pvescale_api_requests{cluster=\"lab\",outcome=\"auth\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        samples(&text, "pvescale_metrics_source"),
        vec!["pvescale_metrics_source{cluster=\"lab\",source=\"rrddata\",reason=\"failed\"} 1"],
    );
    assert!(
        !text.contains(TOKEN_SECRET),
        "no secret in the metrics file"
    );
}

#[test]
fn a_cluster_without_the_export_is_read_through_rrddata_and_says_not_implemented() {
    let env = env_with_metrics(cluster().vm(busy_vm(101, "pve1")), "");
    env.sim
        .add_fault(Fault::on("GET", "/cluster/metrics/export").status(501));
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let text = textfile(&env);
    assert_eq!(
        samples(&text, "pvescale_metrics_source"),
        vec![
            "pvescale_metrics_source{cluster=\"lab\",source=\"rrddata\",reason=\"not_implemented\"} 1"
        ],
    );
    // The next run does not ask again, and says so.
    assert_eq!(run_in_a_minute(&env).code, 0);
    let text = textfile(&env);
    assert_eq!(
        samples(&text, "pvescale_metrics_source"),
        vec![
            "pvescale_metrics_source{cluster=\"lab\",source=\"rrddata\",reason=\"known_unavailable\"} 1"
        ],
    );
}

#[test]
fn status_json_carries_the_same_api_figures() {
    let env = env_with_metrics(cluster().vm(busy_vm(101, "pve1")), "");
    minute(&env);
    env.sim.clear_requests();
    env.sim.add_fault(
        Fault::on("GET", "/cluster/resources")
            .latency(LATENCY)
            .times(1),
    );
    let status = env.run(&["status", "-o", "json"]);
    assert_eq!(status.code, 0, "{}", status.all_output());
    let json = status.json();
    let api = &json["clusters"][0]["api"];
    let requests = env.sim.requests();
    let ok = requests.iter().filter(|r| r.status == 200).count();
    assert_eq!(api["requests"]["ok"], ok, "{api}");
    for outcome in [
        "client_error",
        "server_error",
        "timeout",
        "tls",
        "auth",
        "connect",
    ] {
        assert_eq!(api["requests"][outcome], 0, "{outcome}: {api}");
    }
    let slowest = api["request_seconds_max"].as_f64().unwrap_or(0.0);
    assert!(slowest >= LATENCY.as_secs_f64(), "{api}");
    assert_eq!(api["slowest_endpoint"], "GET /cluster/resources", "{api}");
    assert!(api["received_bytes"].as_u64().unwrap_or(0) > 0, "{api}");
    assert_eq!(
        json["clusters"][0]["metrics_source_used"],
        serde_json::json!({"source": "export", "reason": "complete"})
    );
}

/// The notification lines of channel `webhook:ops` (sent, failed, held, last success), and
/// of `webhook:changes`, which takes only `scaled` events and so is never told anything here.
fn delivery_lines(sent: u32, failed: u32, held: u32, last_success: u64) -> Vec<String> {
    let mut lines = Vec::new();
    for (channel, figures) in [("ops", [sent, failed, held]), ("changes", [0, 0, 0])] {
        for (result, n) in ["sent", "failed", "held"].iter().zip(figures) {
            lines.push(format!(
                "pvescale_notify_messages{{channel=\"webhook:{channel}\",result=\"{result}\"}} {n}"
            ));
        }
    }
    for (channel, at) in [("ops", last_success), ("changes", 0)] {
        lines.push(format!(
            "pvescale_notify_last_success_timestamp_seconds{{channel=\"webhook:{channel}\"}} {at}"
        ));
    }
    lines
}

fn notify_lines(text: &str) -> Vec<&str> {
    let mut lines = samples(text, "pvescale_notify_messages");
    lines.extend(samples(
        text,
        "pvescale_notify_last_success_timestamp_seconds",
    ));
    lines
}

#[test]
fn delivery_per_channel_failed_then_sent_then_quiet_then_held() {
    let rx = Receiver::start();
    let env = env_with_metrics(
        cluster().vm(ready_vm(101, "pve1")),
        &format!(
            "[notify]\nmin_interval = \"0s\"\nmax_per_hour = 2\n\n\
             [[notify.webhook]]\nname = \"ops\"\nurl = \"{}\"\n\n\
             [[notify.webhook]]\nname = \"changes\"\nurl = \"{}\"\nevents = [\"scaled\"]\n",
            rx.url("/hook/SECRETPATH"),
            rx.url("/changes")
        ),
    );
    // 1. The cluster fails, and the webhook answers 500 (retried once): failed.
    rx.status.store(500, Ordering::SeqCst);
    env.sim
        .add_fault(Fault::on("GET", "/cluster/resources").status(500));
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert_eq!(rx.requests().len(), 2, "tried twice");
    assert_eq!(notify_lines(&textfile(&env)), delivery_lines(0, 1, 0, 0));

    // 2. The cluster recovers, the webhook takes the message: sent, and its time.
    env.sim.clear_faults();
    rx.status.store(200, Ordering::SeqCst);
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let delivered_at = u64::try_from(env.sim.now()).expect("simulated time after 1970");
    assert_eq!(rx.requests().len(), 3);
    assert_eq!(
        notify_lines(&textfile(&env)),
        delivery_lines(1, 0, 0, delivered_at)
    );

    // 3. Nothing to tell: no message, and the last success is still known.
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert_eq!(rx.requests().len(), 3);
    assert_eq!(
        notify_lines(&textfile(&env)),
        delivery_lines(0, 0, 0, delivered_at)
    );

    // 4. The cluster fails again, but two messages went out this hour: held back.
    env.sim
        .add_fault(Fault::on("GET", "/cluster/resources").status(500));
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert_eq!(rx.requests().len(), 3, "nothing sent");
    let text = textfile(&env);
    assert_eq!(notify_lines(&text), delivery_lines(0, 0, 1, delivered_at));
    assert!(!text.contains("SECRETPATH"), "{text}");
}

/// The two unsettled-write lines: how many, and the age of the oldest.
fn unsettled_lines(text: &str) -> Vec<&str> {
    let mut lines = samples(text, "pvescale_unsettled_writes");
    lines.extend(samples(text, "pvescale_unsettled_write_oldest_age_seconds"));
    lines
}

#[test]
fn an_unsettled_write_is_counted_and_ages_until_a_run_settles_it() {
    let env = env_with_metrics(
        cluster().vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.95))),
        "[policy.cpu]\nup_after = \"1m\"\n",
    );
    // A short task_timeout for the test; the default is 60s.
    let config = fs::read_to_string(env.config_path()).expect("config");
    write_private(
        &env.config_path(),
        &config.replace(
            "timeout = \"5s\"\n",
            "timeout = \"5s\"\ntask_timeout = \"2s\"\n",
        ),
    );
    advance_until_a_change_is_due(&env);
    env.sim
        .add_fault(Fault::on("POST", "/nodes/pve1/qemu/101/config").task_never_finishes());
    let run = env.run(&["run"]);
    assert_eq!(run.code, 3, "{}", run.all_output());
    assert_eq!(
        unsettled_lines(&textfile(&env)),
        vec![
            "pvescale_unsettled_writes 1",
            "pvescale_unsettled_write_oldest_age_seconds 0"
        ]
    );
    // The cluster cannot be read a minute later: the write stays unsettled, a minute old.
    env.sim.clear_faults();
    env.sim
        .add_fault(Fault::on("GET", "/cluster/resources").status(500));
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert_eq!(
        unsettled_lines(&textfile(&env)),
        vec![
            "pvescale_unsettled_writes 1",
            "pvescale_unsettled_write_oldest_age_seconds 60"
        ]
    );
    // The server behaves again: the next run settles it.
    env.sim.clear_faults();
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert_eq!(
        unsettled_lines(&textfile(&env)),
        vec![
            "pvescale_unsettled_writes 0",
            "pvescale_unsettled_write_oldest_age_seconds 0"
        ]
    );
}

/// Rewrites the config with `from` replaced by `to` (the cluster section's settings).
fn edit_config(env: &TestEnv, from: &str, to: &str) {
    let config = fs::read_to_string(env.config_path()).expect("config");
    assert!(config.contains(from), "{from} in\n{config}");
    write_private(&env.config_path(), &config.replacen(from, to, 1));
}

#[test]
fn a_hang_counts_as_timeout_and_a_dropped_connection_as_connect() {
    let env = env_with_metrics(cluster().vm(busy_vm(101, "pve1")), "");
    edit_config(&env, "timeout = \"5s\"\n", "timeout = \"1s\"\n");
    assert_eq!(run_in_a_minute(&env).code, 0);
    minute(&env);
    env.sim.clear_requests();
    env.sim
        .add_fault(Fault::on("GET", "/cluster/resources").close().times(1));
    env.sim.add_fault(
        Fault::on("GET", "/cluster/metrics/export")
            .hang(Duration::from_secs(3))
            .times(1),
    );
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "both are retried: {}", run.all_output());
    let requests = env.sim.requests();
    let ok = requests.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        requests.len(),
        ok + 2,
        "one dropped, one left hanging: {requests:#?}"
    );
    let text = textfile(&env);
    assert_eq!(
        samples(&text, "pvescale_api_requests"),
        vec![
            format!("pvescale_api_requests{{cluster=\"lab\",outcome=\"ok\"}} {ok}"),
            "pvescale_api_requests{cluster=\"lab\",outcome=\"client_error\"} 0".to_string(),
            "pvescale_api_requests{cluster=\"lab\",outcome=\"server_error\"} 0".to_string(),
            "pvescale_api_requests{cluster=\"lab\",outcome=\"timeout\"} 1".to_string(),
            "pvescale_api_requests{cluster=\"lab\",outcome=\"tls\"} 0".to_string(),
            "pvescale_api_requests{cluster=\"lab\",outcome=\"auth\"} 0".to_string(),
            "pvescale_api_requests{cluster=\"lab\",outcome=\"connect\"} 1".to_string(),
        ],
        "{text}"
    );
    // The hang lasted the whole timeout.
    let slowest = value(&text, "pvescale_api_request_seconds_max{cluster=\"lab\"}");
    assert!(slowest >= 1.0, "slowest {slowest}:\n{text}");
}

#[test]
fn a_certificate_from_another_ca_counts_as_tls() {
    let env = env_with_metrics(cluster().vm(busy_vm(101, "pve1")), "");
    let other = cluster().start().expect("second simulator");
    let other_dir = env.path("other");
    fs::create_dir_all(&other_dir).expect("dir");
    let other_ca = other.write_ca_file(&other_dir).expect("CA file");
    let ours = env.sim.write_ca_file(env.path("").as_path()).expect("CA");
    edit_config(
        &env,
        &format!("ca_file = \"{}\"", ours.display()),
        &format!("ca_file = \"{}\"", other_ca.display()),
    );
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(env.sim.requests().is_empty(), "no request got through");
    let text = textfile(&env);
    let lines = samples(&text, "pvescale_api_requests");
    assert!(
        lines.contains(&"pvescale_api_requests{cluster=\"lab\",outcome=\"tls\"} 1"),
        "{text}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(" 0")).count(),
        6,
        "{text}"
    );
    assert!(
        samples(&text, "pvescale_metrics_source").is_empty(),
        "{text}"
    );
}

#[test]
fn a_refused_export_counts_as_auth_and_the_source_says_refused() {
    let env = env_with_metrics(cluster().vm(busy_vm(101, "pve1")), "");
    env.sim.add_fault(
        Fault::on("GET", "/cluster/metrics/export")
            .status(403)
            .message("Permission check failed (/, Sys.Audit)"),
    );
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let text = textfile(&env);
    assert_eq!(
        samples(&text, "pvescale_api_requests"),
        expected_request_lines(&env.sim.requests()),
        "{text}"
    );
    assert!(
        text.contains("pvescale_api_requests{cluster=\"lab\",outcome=\"auth\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        samples(&text, "pvescale_metrics_source"),
        vec!["pvescale_metrics_source{cluster=\"lab\",source=\"rrddata\",reason=\"refused\"} 1"],
    );
}
