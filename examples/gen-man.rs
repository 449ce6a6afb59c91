//! Generates the man pages and shell completions that are committed and packaged:
//!
//! - `man/pvescale.1` from the clap definitions (`pvescale::cli::Cli`), with clap_mangen;
//! - `man/pvescale.toml.5` from the config documentation table (`pvescale::config::doc`);
//! - `packaging/completions/{pvescale.bash,_pvescale,pvescale.fish}` with clap_complete.
//!
//! `cargo run --example gen-man` rewrites them; `cargo run --example gen-man -- --check` only
//! says which are stale. The test `tests/it/ops.rs` fails when a committed file differs from what
//! this generates. The generators are dev-dependencies, so the shipped binary does not carry
//! them.

use std::io::Write as _;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use pvescale::cli::Cli;
use pvescale::config::doc::{self, Section};
use pvescale::error::Exit;
use roff::{Roff, bold, italic, roman};

/// Every generated file: path relative to the repository root, and its content.
pub fn outputs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("man/pvescale.1", pvescale_1().into_bytes()),
        ("man/pvescale.toml.5", pvescale_toml_5().into_bytes()),
        (
            "packaging/completions/pvescale.bash",
            completion(Shell::Bash),
        ),
        ("packaging/completions/_pvescale", completion(Shell::Zsh)),
        (
            "packaging/completions/pvescale.fish",
            completion(Shell::Fish),
        ),
    ]
}

fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pvescale", &mut out);
    out
}

/// Exit codes, from the one enum the binary maps every outcome to.
const EXIT_CODES: &[(Exit, &str)] = &[
    (Exit::Ok, "Success: every managed VM was handled."),
    (
        Exit::Runtime,
        "A runtime error: no cluster could be read, the state could not be written, or \
         (check) no managed VM is ready.",
    ),
    (Exit::Usage, "Wrong command-line usage."),
    (
        Exit::Partial,
        "Some VMs failed or some clusters could not be read; the others were handled.",
    ),
    (
        Exit::Locked,
        "Another run holds the lock; this run did nothing (EX_TEMPFAIL; the systemd unit \
         counts it as success).",
    ),
    (
        Exit::Config,
        "The config file is missing or invalid; the message names file, line, column and key \
         (EX_CONFIG).",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "PVESCALE_CONFIG",
        "The config file, when --config is not given.",
    ),
    (
        "STATE_DIRECTORY",
        "Set by systemd's StateDirectory=: the state directory when the config sets no \
         state_dir (the first of a colon-separated list).",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Set by systemd's LoadCredential=: the token secret of cluster NAME is read from \
         $CREDENTIALS_DIRECTORY/NAME.token, a password from NAME.password, when the config has \
         neither the secret nor a file for it.",
    ),
    (
        "PVESCALE_TOKEN_SECRET_<NAME>",
        "The token secret of the cluster named NAME (uppercased, characters other than letters \
         and digits replaced by _), after the config and the credentials directory.",
    ),
    (
        "PVESCALE_PASSWORD_<NAME>",
        "The password of the cluster named NAME, looked up like the token secret.",
    ),
    (
        "PVESCALE_SMTP_PASSWORD",
        "The SMTP password of [notify.email], after password_file, password and the \
         credential $CREDENTIALS_DIRECTORY/smtp.password.",
    ),
    (
        "PVESCALE_GOTIFY_TOKEN",
        "The Gotify application token of [notify.gotify], after token_file, token and the \
         credential $CREDENTIALS_DIRECTORY/gotify.token.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd when stderr is the journal: log lines carry <N> priority prefixes, and \
         run logs a line per change, refusal or failure and one summary line instead of \
         printing a table.",
    ),
    (
        "PVESCALE_NOW",
        "Unix time to use as \"now\" (for tests and the simulated cluster).",
    ),
    (
        "TZ",
        "The time zone [[schedule]] windows are read in (an IANA name such as Europe/Berlin), \
         when a schedule sets no timezone; else /etc/localtime.",
    ),
    (
        "HOME, XDG_CONFIG_HOME, XDG_STATE_HOME",
        "The per-user config file and state directory when not run as root.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "/etc/pvescale/pvescale.toml",
        "The config file when run as root; see pvescale.toml(5).",
    ),
    (
        "~/.config/pvescale/pvescale.toml",
        "The config file of other users.",
    ),
    (
        "/var/lib/pvescale/state.json",
        "The state: per VM and resource, breaches, last changes, back-offs. Written \
         atomically; an unreadable one is set aside and pvescale starts afresh.",
    ),
    (
        "/var/lib/pvescale/pvescale.lock",
        "The lock that keeps two runs apart.",
    ),
    (
        "/var/lib/pvescale/history.jsonl, history.jsonl.1",
        "The history: one JSON object a line (time, cluster, vmid, name, node, resource, \
         from, to, reason, outcome, detail), rotated by size.",
    ),
    (
        "metrics_file",
        "The Prometheus textfile, when the config names one.",
    ),
    (
        "/usr/lib/systemd/system/pvescale.service, pvescale.timer",
        "The systemd units: the timer starts the service every minute.",
    ),
    (
        "/usr/share/doc/pvescale/examples/pvescale.toml",
        "Every config key with its default.",
    ),
];

const EXAMPLES: &[(&str, &str)] = &[
    (
        "pvescale check",
        "Is the config valid, the token right, and every managed VM ready for live scaling?",
    ),
    (
        "pvescale run --dry-run",
        "What would change, and why; changes nothing and writes no state, history or metrics.",
    ),
    (
        "pvescale run -q",
        "Scale every managed VM once; print only when something changed or failed (for cron).",
    ),
    (
        "pvescale status -o json",
        "Every managed VM with its size, utilisation, readiness and next action, as JSON.",
    ),
    (
        "pvescale history --vm 101 --since 7d",
        "What was changed, refused or failed for VM 101 in the last week.",
    ),
    (
        "systemctl enable --now pvescale.timer",
        "Run every minute under systemd.",
    ),
];

fn para(roff: &mut Roff, text: &str) {
    roff.control("PP", []).text([roman(text)]);
}

fn item(roff: &mut Roff, term: &str, text: &str) {
    roff.control("TP", [])
        .text([bold(term)])
        .text([roman(text)]);
}

fn section(roff: &mut Roff, name: &str) {
    roff.control("SH", [name]);
}

/// `clap_mangen` renders a command's options under `.SH OPTIONS`; here they belong under the
/// subcommand's `.SS`.
fn options_of(cmd: &clap::Command) -> String {
    let mut out = Vec::new();
    // Writing to a Vec does not fail.
    let _ = clap_mangen::Man::new(cmd.clone()).render_options_section(&mut out);
    String::from_utf8_lossy(&out).replacen(".SH OPTIONS\n", "", 1)
}

/// pvescale(1).
pub fn pvescale_1() -> String {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone()).manual("pvescale manual");
    let mut out = Vec::new();
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);

    let mut roff = Roff::new();
    section(&mut roff, "DESCRIPTION");
    para(
        &mut roff,
        "pvescale gives Proxmox VE virtual machines more vCPUs and memory when they are busy and \
         takes them back when they are idle: live, through the Proxmox VE API, without reboots \
         and without flapping. It is a one-shot command: a systemd timer (or cron) starts it \
         every minute; each run loads the config, takes a lock, reads its state, looks at every \
         managed VM once, changes what needs changing, records what it did and exits.",
    );
    para(
        &mut roff,
        "It changes vcpus within sockets × cores (never cores or sockets), and memory on the \
         DIMM grid of memory hotplug. Utilisation is averaged over a window; missing data is \
         unknown, never idle. A VM grows only after its load stayed high for a while and \
         shrinks only after it stayed low, with cooldowns after every change and a back-off \
         after a change the VM refused. Every write carries the config digest and waits for \
         its task; anything of pvescale's that did not go live is reverted.",
    );
    para(
        &mut roff,
        "Every change, refusal and failure is appended to the history (see pvescale history), \
         and, when the config sets metrics_file, every run writes a Prometheus textfile.",
    );
    let _ = roff.to_writer(&mut out);

    let _ = man.render_options_section(&mut out);

    let mut roff = Roff::new();
    section(&mut roff, "COMMANDS");
    let mut text = String::from_utf8_lossy(&out).into_owned();
    for sub in cmd.get_subcommands() {
        let mut heading = format!("pvescale {}", sub.get_name());
        if sub.get_arguments().next().is_some() {
            heading.push_str(" [OPTIONS]");
        }
        roff.control("SS", [heading.as_str()]);
        let about = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        roff.text([roman(about)]);
        text.push_str(&roff.render());
        roff = Roff::new();
        text.push_str(&options_of(sub));
    }

    section(&mut roff, "EXIT STATUS");
    for (exit, meaning) in EXIT_CODES {
        item(&mut roff, &(*exit as u8).to_string(), meaning);
    }
    section(&mut roff, "ENVIRONMENT");
    for (name, meaning) in ENVIRONMENT {
        item(&mut roff, name, meaning);
    }
    section(&mut roff, "FILES");
    for (name, meaning) in FILES {
        item(&mut roff, name, meaning);
    }
    section(&mut roff, "EXAMPLES");
    for (command, meaning) in EXAMPLES {
        item(&mut roff, command, meaning);
    }
    section(&mut roff, "SEE ALSO");
    roff.text([
        bold("pvescale.toml"),
        roman("(5), "),
        bold("systemd.timer"),
        roman("(5), "),
        bold("systemd.exec"),
        roman("(5), "),
        bold("qm"),
        roman("(1), "),
        bold("pveum"),
        roman("(1)"),
    ]);
    text.push_str(&roff.render());
    let _ = out.flush();
    text
}

/// pvescale.toml(5).
pub fn pvescale_toml_5() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "pvescale.toml",
            "5",
            "",
            &format!("pvescale {version}"),
            "pvescale manual",
        ],
    );
    section(&mut roff, "NAME");
    roff.text([roman("pvescale.toml - the configuration file of pvescale")]);
    section(&mut roff, "SYNOPSIS");
    roff.text([
        italic("/etc/pvescale/pvescale.toml"),
        roman(", "),
        italic("~/.config/pvescale/pvescale.toml"),
    ]);
    section(&mut roff, "DESCRIPTION");
    para(
        &mut roff,
        "pvescale reads a TOML file from --config, else $PVESCALE_CONFIG, else \
         /etc/pvescale/pvescale.toml when run as root, else ~/.config/pvescale/pvescale.toml. \
         Unknown keys are errors, and every error names the file, line, column and key, so a \
         typo never falls back to a default silently. Values are checked together: all \
         problems are reported at once, and the run exits with 78.",
    );
    para(
        &mut roff,
        "The only required parts are one [[cluster]] and a [select] that names some VMs; \
         every other key has the default given below. \
         /usr/share/doc/pvescale/examples/pvescale.toml shows every key.",
    );
    section(&mut roff, "VALUES");
    for (kind, meaning) in doc::UNITS {
        item(&mut roff, kind, meaning);
    }
    for s in doc::SECTIONS {
        render_section(&mut roff, s);
    }
    section(&mut roff, "EXAMPLE");
    roff.control("nf", []);
    roff.text([roman(include_str!("minimal.toml").trim_end())]);
    roff.control("fi", []);
    section(&mut roff, "SEE ALSO");
    roff.text([bold("pvescale"), roman("(1)")]);
    roff.render()
}

fn render_section(roff: &mut Roff, s: &Section) {
    let title = if s.name.is_empty() {
        "TOP-LEVEL KEYS".to_string()
    } else {
        s.name.to_string()
    };
    section(roff, &title);
    roff.text([roman(s.about)]);
    for k in s.keys {
        roff.control("TP", [])
            .text([bold(k.name), roman(" ("), italic(k.kind), roman(")")]);
        let default = if k.default == "required" {
            "Required.".to_string()
        } else {
            format!("Default: {}.", k.default)
        };
        roff.text([roman(format!("{} {default}", k.meaning))]);
    }
}

#[allow(dead_code)]
fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = std::env::args().any(|a| a == "--check");
    let mut stale = Vec::new();
    for (path, content) in outputs() {
        let full = root.join(path);
        if std::fs::read(&full).ok().as_deref() == Some(content.as_slice()) {
            continue;
        }
        stale.push(path);
        if !check {
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir).expect("create the directory");
            }
            std::fs::write(&full, &content).expect("write the file");
            println!("wrote {path}");
        }
    }
    if check && !stale.is_empty() {
        eprintln!(
            "stale: {} (run `cargo run --example gen-man`)",
            stale.join(", ")
        );
        std::process::exit(1);
    }
}
