//! Proxies (issue 18.2): one from the environment is ignored; one in the config carries the API
//! calls and the HTTP notifications through a CONNECT tunnel (a tiny proxy on 127.0.0.1 here).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::common::*;
use crate::notify::Receiver;

/// An HTTP CONNECT proxy: records each `CONNECT host:port`, then copies bytes both ways.
struct ConnectProxy {
    port: u16,
    connects: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connects = Arc::new(Mutex::new(Vec::new()));
        let seen = connects.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = tunnel(client, &seen);
                });
            }
        });
        ConnectProxy { port, connects }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connects(&self) -> Vec<String> {
        self.connects.lock().expect("lock").clone()
    }
}

fn tunnel(mut client: TcpStream, seen: &Mutex<Vec<String>>) -> io::Result<()> {
    // The request head, byte by byte (nothing after it may be swallowed).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        client.write_all(b"HTTP/1.1 405 Only CONNECT\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    seen.lock().expect("lock").push(target.to_string());
    let upstream = match TcpStream::connect(target) {
        Ok(s) => s,
        Err(_) => {
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
    };
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut c_read, mut u_write) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let _ = io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// Every spelling of a proxy variable ureq (and curl) would read, all pointing at a dead port.
fn proxy_environment() -> Vec<(&'static str, String)> {
    let dead = format!("http://127.0.0.1:{}", closed_port());
    [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ]
    .into_iter()
    .map(|k| (k, dead.clone()))
    .collect()
}

fn sim_authority(env: &TestEnv) -> String {
    env.sim
        .url()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// The config with `proxy` in the cluster section (and `extra` after it).
fn write_config_with_proxy(env: &TestEnv, proxy: &str, extra: &str) {
    let text = format!(
        "state_dir = \"{}\"\n\n{}proxy = \"{proxy}\"\n\n[select]\ntags = [\"autoscale\"]\n\n{extra}\n",
        env.state_dir().display(),
        env.cluster_toml(),
    );
    write_private(&env.config_path(), &text);
}

#[test]
fn a_proxy_in_the_environment_is_ignored() {
    let env = busy_env();
    let rx = Receiver::start();
    env.write_config(&format!(
        "[policy.cpu]\nup_after = \"1m\"\n\n[[notify.webhook]]\nurl = \"{}\"\n",
        rx.url("/hook")
    ));
    let vars = proxy_environment();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = env.run_with_env(&["run"], &vars);
    assert_eq!(first.code, 0, "{}", first.all_output());
    minute(&env);
    let second = env.run_with_env(&["run"], &vars);
    assert_eq!(second.code, 0, "{}", second.all_output());
    assert!(
        env.vcpus(101) > 2,
        "scaled directly: {}",
        second.all_output()
    );
    assert_eq!(
        rx.to("/hook").len(),
        1,
        "notified directly: {}",
        second.all_output()
    );
}

#[test]
fn a_configured_proxy_carries_the_api_calls_and_the_notifications() {
    let env = busy_env();
    let proxy = ConnectProxy::start();
    let rx = Receiver::start();
    write_config_with_proxy(
        &env,
        &proxy.url(),
        &format!(
            "[policy.cpu]\nup_after = \"1m\"\n\n[notify]\nproxy = \"{}\"\n\n\
             [[notify.webhook]]\nurl = \"{}\"\n",
            proxy.url(),
            rx.url("/hook")
        ),
    );
    let first = env.run(&["run"]);
    assert_eq!(first.code, 0, "{}", first.all_output());
    minute(&env);
    let second = env.run(&["run"]);
    assert_eq!(second.code, 0, "{}", second.all_output());
    assert!(env.vcpus(101) > 2, "{}", second.all_output());
    assert_eq!(rx.to("/hook").len(), 1, "{}", second.all_output());
    let connects = proxy.connects();
    let api = sim_authority(&env);
    let hook = format!("127.0.0.1:{}", rx.port);
    // One tunnel per connection: a few per run (the pool keeps them within a run).
    let to_api = connects.iter().filter(|c| **c == api).count();
    assert!((2..=20).contains(&to_api), "{connects:?} (api {api})");
    assert_eq!(
        connects.iter().filter(|c| **c == hook).count(),
        1,
        "{connects:?}"
    );
    assert_eq!(connects.len(), to_api + 1, "nothing else: {connects:?}");

    // The proxy down: the run says it could not connect (and scales nothing).
    write_config_with_proxy(&env, &format!("http://127.0.0.1:{}", closed_port()), "");
    minute(&env);
    let down = env.run(&["run"]);
    assert_ne!(down.code, 0, "{}", down.all_output());
}

#[test]
fn proxy_urls_other_than_http_are_refused_at_load() {
    let env = busy_env();
    write_config_with_proxy(&env, "https://user:Pr0xyPass@proxy.example.com:3128", "");
    let run = env.run(&["check"]);
    assert_eq!(run.code, 78, "{}", run.all_output());
    assert!(
        run.stderr.contains("cluster[0].proxy"),
        "{}",
        run.all_output()
    );
    assert!(
        !run.all_output().contains("Pr0xyPass"),
        "{}",
        run.all_output()
    );
}
