//! The config file's documentation as data: every section and key, its type, default and
//! meaning. `pvescale.toml(5)` is generated from this table (`cargo run --example gen-man`),
//! and tests check it against the loader (every key here is accepted, with the type its
//! example has), against the built-in defaults, and against `examples/pvescale.toml` (the same
//! keys in both).

/// One table of the file (`""` is the top level, before any table).
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// `""`, `[[cluster]]`, `[select]`, `[policy]`, `[policy.cpu]`, ...
    pub name: &'static str,
    pub about: &'static str,
    pub keys: &'static [Key],
}

/// One key of a section.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    /// What the value is: `duration`, `size`, `percent`, `path`, `string`, ...
    pub kind: &'static str,
    /// The default, for people (`"5m"`, `none`, `the middle of low and high`).
    pub default: &'static str,
    /// The default as a TOML value, when it is one fixed value (checked against the code).
    pub default_toml: Option<&'static str>,
    /// A valid TOML value of the right type (checked against the loader).
    pub example: &'static str,
    pub meaning: &'static str,
}

const fn key(
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    default_toml: Option<&'static str>,
    example: &'static str,
    meaning: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        default_toml,
        example,
        meaning,
    }
}

/// How durations, sizes and percentages are written.
pub const UNITS: &[(&str, &str)] = &[
    (
        "duration",
        "A quoted string of one or more <integer><unit> parts, units d, h, m, s, largest first: \
         \"90s\", \"5m\", \"1h30m\", \"1d\". A bare number is an error.",
    ),
    (
        "size",
        "A quoted string with a binary unit, \"512MiB\", \"4GiB\", \"1.5GiB\", \"1TiB\", or a bare \
         integer meaning MiB: 4096. \"4G\" and \"4GB\" are errors (4000 or 4096 MiB?). Sizes are \
         whole MiB.",
    ),
    (
        "percent",
        "A number above 0 and at most 100, without quotes or %: 80 or 87.5.",
    ),
    (
        "path",
        "A quoted file path; a relative path is taken from the directory of the config file.",
    ),
];

/// Every key of `[policy.cpu]`/`[policy.memory]`, with the defaults of one resource.
macro_rules! resource_keys {
    ($unit:literal, $min:literal, $max:literal, $high:literal, $low:literal, $up:literal,
     $down:literal, $cup:literal, $cdown:literal, $step_up:literal, $step_down:literal,
     $ex_size:literal, $min_rule:literal, $step_rule:literal, $saturated:literal,
     $ex_saturated:literal) => {
        &[
            key(
                "enabled",
                "boolean",
                "true",
                Some("true"),
                "true",
                "Manage this resource at all.",
            ),
            key(
                "scale_up",
                "boolean",
                "true",
                Some("true"),
                "true",
                "Allow growing it.",
            ),
            key(
                "scale_down",
                "boolean",
                "true",
                Some("true"),
                "true",
                "Allow shrinking it.",
            ),
            key(
                "high",
                "percent",
                $high,
                Some($high),
                "75",
                "Utilisation above this for up_after makes the VM grow.",
            ),
            key(
                "low",
                "percent",
                $low,
                Some($low),
                "20",
                "Utilisation below this for down_after makes the VM shrink. Must be below high.",
            ),
            key(
                "target",
                "percent",
                "the middle of low and high",
                None,
                "50",
                "The utilisation to size toward, strictly between low and high.",
            ),
            key("min", $unit, $min, Some($min), $ex_size, $min_rule),
            key(
                "max",
                $unit,
                $max,
                Some($max),
                $ex_size,
                "The largest size pvescale sets; at least min.",
            ),
            key(
                "up_after",
                "duration",
                $up,
                Some($up),
                "\"3m\"",
                "How long utilisation must stay above high before growing.",
            ),
            key(
                "down_after",
                "duration",
                $down,
                Some($down),
                "\"20m\"",
                "How long utilisation must stay below low before shrinking.",
            ),
            key(
                "cooldown_up",
                "duration",
                $cup,
                Some($cup),
                "\"5m\"",
                "No growth for this long after any change of this resource.",
            ),
            key(
                "cooldown_down",
                "duration",
                $cdown,
                Some($cdown),
                "\"30m\"",
                "No shrinking for this long after any change of this resource.",
            ),
            key(
                "max_step_up",
                $unit,
                $step_up,
                Some($step_up),
                $ex_size,
                $step_rule,
            ),
            key(
                "max_step_down",
                $unit,
                $step_down,
                Some($step_down),
                $ex_size,
                "The most removed in one change (the same lower bound as max_step_up).",
            ),
            key(
                "saturated_factor",
                "number",
                $saturated,
                Some($saturated),
                $ex_saturated,
                "A resource pinned at its size (95 % or more) shows no demand beyond it: it \
                 grows by this factor (then bounded by max_step_up, max and the live envelope) \
                 instead of toward target. 1 to 10.",
            ),
        ]
    };
}

/// The sections in the order the file and the man page show them.
pub const SECTIONS: &[Section] = &[
    Section {
        name: "",
        about: "Keys at the top of the file, before any table.",
        keys: &[
            key(
                "state_dir",
                "path",
                "$STATE_DIRECTORY (systemd StateDirectory=), else /var/lib/pvescale as root, else \
                 ~/.local/state/pvescale",
                None,
                "\"/var/lib/pvescale\"",
                "Where pvescale keeps its state (per-VM timers, cooldowns, back-offs), its lock \
                 and history.jsonl, the log of every change, refusal and failure.",
            ),
            key(
                "metrics_file",
                "path",
                "none (no metrics file)",
                None,
                "\"/var/lib/prometheus/node-exporter/pvescale.prom\"",
                "After every run (not a dry run), write a Prometheus text-format file there, \
                 atomically, for node_exporter's textfile collector (which reads only *.prom \
                 files). The directory must exist and be writable by pvescale.",
            ),
        ],
    },
    Section {
        name: "[[cluster]]",
        about: "One table per Proxmox VE cluster; at least one. Authentication is an API token \
                (token plus its secret) or a user and password; exactly one of token and user.",
        keys: &[
            key(
                "name",
                "string",
                "required",
                None,
                "\"lab\"",
                "Unique, 1-64 characters: letters, digits, '-', '_', '.'. Used in messages, in \
                 systemd credential names (<name>.token, <name>.password) and in environment \
                 variable names (uppercased, other characters replaced by _).",
            ),
            key(
                "url",
                "string",
                "required",
                None,
                "\"https://pve1.example.com:8006\"",
                "https://HOST[:PORT] of any node of the cluster; the port defaults to 8006.",
            ),
            key(
                "fallback_urls",
                "list of strings",
                "[]",
                Some("[]"),
                "[\"https://pve2.example.com:8006\"]",
                "Other nodes of the same cluster, tried in order when the one before does not \
                 answer.",
            ),
            key(
                "token",
                "string",
                "none",
                None,
                "\"pvescale@pve!autoscale\"",
                "The API token ID, user@realm!tokenid.",
            ),
            key(
                "token_secret_file",
                "path",
                "none",
                None,
                "\"lab.secret\"",
                "A file holding only the token secret (a trailing newline is ignored). Looked up \
                 first; a missing file is an error. Then token_secret, then \
                 $CREDENTIALS_DIRECTORY/<name>.token (systemd LoadCredential=), then the \
                 environment variable PVESCALE_TOKEN_SECRET_<NAME>.",
            ),
            key(
                "token_secret",
                "string",
                "none",
                None,
                "\"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\"",
                "The token secret inline; pvescale warns when the file is readable by group or \
                 others. At most one of token_secret_file and token_secret.",
            ),
            key(
                "user",
                "string",
                "none",
                None,
                "\"pvescale@pve\"",
                "A user (user@realm) for a ticket login, instead of a token; users with TFA can \
                 not be used.",
            ),
            key(
                "password_file",
                "path",
                "none",
                None,
                "\"lab.password\"",
                "A file holding only the password. Looked up like the token secret: \
                 password_file, password, $CREDENTIALS_DIRECTORY/<name>.password, then \
                 PVESCALE_PASSWORD_<NAME>.",
            ),
            key(
                "password",
                "string",
                "none",
                None,
                "\"not-a-real-password\"",
                "The password inline (warned about like token_secret).",
            ),
            key(
                "ca_file",
                "path",
                "none (the system's root certificates)",
                None,
                "\"pve-root-ca.pem\"",
                "A CA certificate file (PEM) to check the server with, e.g. a copy of \
                 /etc/pve/pve-root-ca.pem. At most one of ca_file, fingerprint and insecure.",
            ),
            key(
                "fingerprint",
                "string",
                "none",
                None,
                "\"AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\"",
                "Pin the server certificate's SHA-256 fingerprint: 64 hex digits, with or without \
                 colons, any case. That one certificate is accepted whatever its dates and the \
                 names it holds (an expired or other-host certificate is accepted by design: \
                 the pin is the trust); the server must still prove it holds its key. Pin again \
                 after the node's certificate is renewed.",
            ),
            key(
                "insecure",
                "boolean",
                "false",
                Some("false"),
                "false",
                "Do not verify the server certificate at all (warned about on every run; for a \
                 lab only).",
            ),
            key(
                "timeout",
                "duration",
                "\"10s\"",
                Some("\"10s\""),
                "\"15s\"",
                "Timeout of one API request.",
            ),
            key(
                "connect_timeout",
                "duration",
                "\"5s\"",
                Some("\"5s\""),
                "\"3s\"",
                "Timeout of connecting (TCP and TLS) to a node; not longer than timeout (unset: 5s, or timeout if that is shorter).",
            ),
            key(
                "task_timeout",
                "duration",
                "\"60s\"",
                Some("\"60s\""),
                "\"2m\"",
                "Longest wait for the task of a config write; a write still running then is \
                 settled by the next run.",
            ),
            key(
                "active",
                "string",
                "\"auto\"",
                Some("\"auto\""),
                "\"always\"",
                "\"auto\": installed on every node of a cluster, only one acts: the HA \
                 manager's master (when fresh), else the online node with the lowest node id, \
                 and only with quorum; the others print which node is active and exit 0, reading \
                 and writing nothing more. A host that is not a member always acts. \"always\": \
                 act wherever this runs.",
            ),
            key(
                "local_node",
                "string",
                "the host name",
                None,
                "\"pve1\"",
                "The Proxmox VE node this runs on, for active = \"auto\".",
            ),
            key(
                "proxy",
                "string",
                "none (direct)",
                None,
                "\"http://proxy.example.com:3128\"",
                "An HTTP proxy to reach the cluster through: \"http://host:port\", used as a \
                 CONNECT tunnel (TLS stays end to end, verified as without it). No user or \
                 password in the URL, no https:// or socks proxies. Proxy variables of the \
                 environment (HTTPS_PROXY, ALL_PROXY, ...) are ignored.",
            ),
        ],
    },
    Section {
        name: "[select]",
        about: "Which VMs are managed: those with any of tags, any of vmids or in any of pools, \
                minus those with any of exclude_tags or in exclude_vmids. At least one of tags, \
                vmids and pools. Tags are compared ignoring case. The same selection applies to \
                containers (LXC) when types includes \"ct\".",
        keys: &[
            key(
                "tags",
                "list of strings",
                "[]",
                Some("[]"),
                "[\"autoscale\"]",
                "Manage VMs with any of these tags.",
            ),
            key(
                "vmids",
                "list of integers",
                "[]",
                Some("[]"),
                "[101, 102]",
                "Manage these VMs (100 to 999999999).",
            ),
            key(
                "pools",
                "list of strings",
                "[]",
                Some("[]"),
                "[\"web\"]",
                "Manage the VMs in these pools.",
            ),
            key(
                "exclude_tags",
                "list of strings",
                "[]",
                Some("[]"),
                "[\"no-autoscale\"]",
                "Never manage VMs with any of these tags.",
            ),
            key(
                "exclude_vmids",
                "list of integers",
                "[]",
                Some("[]"),
                "[103]",
                "Never manage these VMs.",
            ),
            key(
                "types",
                "list of strings",
                "[\"vm\"]",
                Some("[\"vm\"]"),
                "[\"vm\", \"ct\"]",
                "Guest types managed: \"vm\" (QEMU) and/or \"ct\" (LXC containers). VMs only \
                 unless set, so that an upgrade never starts resizing containers a selection \
                 already matched; containers' cores and memory change live.",
            ),
        ],
    },
    Section {
        name: "[policy]",
        about: "How every managed VM is scaled (per VM: [[override]]).",
        keys: &[
            key(
                "window",
                "duration",
                "\"5m\"",
                Some("\"5m\""),
                "\"10m\"",
                "Utilisation is averaged over this window each run; 1m to 30m (Proxmox keeps 30 \
                 minutes of cluster/metrics/export samples). Where the metrics source's points \
                 are too far apart for min_samples of them to fit (rrddata: one a minute), a \
                 run reads the smallest window that holds them and says so.",
            ),
            key(
                "min_samples",
                "integer",
                "3",
                Some("3"),
                "5",
                "Fewest samples the window must hold for a figure to count; fewer is \"unknown\", \
                 and nothing is done on an unknown figure. At least 1.",
            ),
            key(
                "memory_margin",
                "percent",
                "15",
                Some("15"),
                "20",
                "Memory never shrinks below what is in use plus this percent of it; 0 to below \
                 100.",
            ),
            key(
                "backoff",
                "duration",
                "\"1h\"",
                Some("\"1h\""),
                "\"2h\"",
                "After a VM refused a change (left pending, unplug failed), no new attempt in that \
                 direction for this long. More than 0s.",
            ),
            key(
                "stale_after",
                "duration",
                "\"10m\"",
                Some("\"10m\""),
                "\"15m\"",
                "A running VM without a metrics sample for longer than this fails the run (exit \
                 3, a failed notification): pvescale has gone blind for it. At least 2m.",
            ),
        ],
    },
    Section {
        name: "[policy.cpu]",
        about: "CPU, in vCPUs. Only vcpus is changed, live, within sockets × cores (the VM needs \
                \"cpu\" in its hotplug option). Utilisation is the average busy fraction of the \
                current vCPUs.",
        keys: resource_keys!(
            "vCPUs",
            "1",
            "8",
            "80",
            "25",
            "\"2m\"",
            "\"15m\"",
            "\"3m\"",
            "\"15m\"",
            "4",
            "1",
            "4",
            "The smallest size pvescale sets; at least 1.",
            "The most added in one change; at least 1.",
            "3",
            "2"
        ),
    },
    Section {
        name: "[policy.memory]",
        about: "Memory, as sizes. Changes move on Proxmox VE's DIMM grid (1024 + k × 512 MiB up to \
                17408 MiB, coarser above); the VM needs \"memory\" in its hotplug option and numa \
                enabled. Utilisation is used / current memory from the guest's balloon \
                statistics; without them pvescale never shrinks memory.",
        keys: resource_keys!(
            "size",
            "\"1GiB\"",
            "\"16GiB\"",
            "85",
            "40",
            "\"1m\"",
            "\"30m\"",
            "\"3m\"",
            "\"30m\"",
            "\"4GiB\"",
            "\"1GiB\"",
            "\"2GiB\"",
            "The smallest size pvescale sets; at least 1GiB (memory hotplug needs 1 GiB of \
             static memory).",
            "The most added in one change; at least 512MiB, the smallest DIMM.",
            "1.5",
            "2"
        ),
    },
    Section {
        name: "[host]",
        about: "A guard on the VM's own node. It only ever blocks a scale-up, never a scale-down.",
        keys: &[
            key(
                "max_memory",
                "percent",
                "90",
                Some("90"),
                "85",
                "Block a memory scale-up that would take the node's used memory above this.",
            ),
            key(
                "max_cpu",
                "percent",
                "90",
                Some("90"),
                "85",
                "Block any scale-up while the node's CPU is above this.",
            ),
        ],
    },
    Section {
        name: "[history]",
        about: "history.jsonl in the state directory: one JSON line per change, refusal and \
                failure (`pvescale history` shows it). Dry runs and status add nothing.",
        keys: &[key(
            "max_size",
            "size",
            "\"1MiB\"",
            Some("\"1MiB\""),
            "\"4MiB\"",
            "When history.jsonl would grow past this, it is renamed to history.jsonl.1 \
             (replacing the previous one) and a new file is started. At least 1MiB.",
        )],
    },
    Section {
        name: "[[override]]",
        about: "Per-VM policy, applied in file order to the guests it matches (any of vmids, \
                tags, pools, within types; at least one); where two set the same key the later wins. Overrides that \
                can apply to the same VM must together still satisfy low < high and min ≤ max. \
                They only change how a managed VM is scaled; [select] decides which are managed.",
        keys: &[
            key(
                "vmids",
                "list of integers",
                "[]",
                Some("[]"),
                "[105]",
                "VMs this override applies to.",
            ),
            key(
                "tags",
                "list of strings",
                "[]",
                Some("[]"),
                "[\"db\"]",
                "Tags of the VMs this override applies to.",
            ),
            key(
                "pools",
                "list of strings",
                "[]",
                Some("[]"),
                "[\"batch\"]",
                "Pools of the VMs this override applies to.",
            ),
            key(
                "types",
                "list of strings",
                "both",
                None,
                "[\"ct\"]",
                "Only guests of these types (\"vm\", \"ct\"); alone, every managed guest of those \
                 types (e.g. container defaults).",
            ),
            key(
                "cpu",
                "inline table",
                "{}",
                Some("{}"),
                "{ max = 16 }",
                "Any keys of [policy.cpu].",
            ),
            key(
                "memory",
                "inline table",
                "{}",
                Some("{}"),
                "{ scale_down = false }",
                "Any keys of [policy.memory].",
            ),
        ],
    },
    Section {
        name: "[[schedule]]",
        about: "A weekly window in which the VMs it selects (any of vmids, tags, pools; every \
                managed VM when none is set) are frozen or held at a floor. Times are wall-clock \
                times in the local time zone (TZ, else /etc/localtime) or in timezone, and follow \
                daylight saving changes: a time inside the hour clocks skip is read as the same \
                time after the change, one that happens twice as the first. Each schedule sets \
                either freeze or floor. A freeze wins over a floor; several floors: the highest. \
                `status` and `run --dry-run` name the windows in force and what they prevented. \
                Breaches go on being measured during a freeze, so a VM that stayed busy grows \
                when the window ends.",
        keys: &[
            key(
                "name",
                "string",
                "the window's time",
                None,
                "\"backup\"",
                "A name for the window in status, reasons and the run summary. Unique.",
            ),
            key(
                "when",
                "string or list of strings",
                "required",
                None,
                "\"Sat 01:00..05:00\"",
                "[DAYS] HH:MM..HH:MM, as in systemd's calendar: DAYS a comma-separated list of \
                 weekdays and ranges (Mon..Fri,Sun), every day when left out; a time range that \
                 ends at or before it starts runs over midnight and belongs to the day it starts \
                 (\"Fri 22:00..06:00\"); days alone are the whole day (\"Sat,Sun\"). A list \
                 gives several windows.",
            ),
            key(
                "timezone",
                "string",
                "the local zone",
                None,
                "\"Europe/Berlin\"",
                "An IANA time zone to read the times in, for a scaler whose host runs in \
                 another zone (often UTC) than the VMs' users.",
            ),
            key(
                "vmids",
                "list of integers",
                "[]",
                Some("[]"),
                "[105]",
                "VMs this schedule applies to.",
            ),
            key(
                "tags",
                "list of strings",
                "[]",
                Some("[]"),
                "[\"db\"]",
                "Tags of the VMs this schedule applies to.",
            ),
            key(
                "pools",
                "list of strings",
                "[]",
                Some("[]"),
                "[\"batch\"]",
                "Pools of the VMs this schedule applies to.",
            ),
            key(
                "freeze",
                "string",
                "none",
                None,
                "\"all\"",
                "\"all\": no change at all during the window (backups, change freezes); \
                 \"scale-down\": no shrink, growth goes on.",
            ),
            key(
                "floor",
                "inline table",
                "none",
                None,
                "{ cpu = 4, memory = \"8GiB\" }",
                "At least these vCPUs and this memory during the window (be big before the \
                 morning load arrives): a smaller VM is raised at once, without waiting for a \
                 breach or its cooldown (still within max, the live envelope and the host \
                 guard), and shrinks stop at the floor. After the window the VM shrinks back on \
                 its load as usual.",
            ),
        ],
    },
    Section {
        name: "[notify]",
        about: "Notifications after a run: email, Gotify and webhooks. All events of a run go out \
                as one message per channel; each (VM, event kind) at most once per min_interval; \
                conditions (blocked, failed) once until they change; at most max_per_hour \
                messages. A channel that fails is logged, retried once and counted in the run \
                summary; it never fails the run. A dry run sends nothing and prints what it \
                would have sent; `pvescale check --notify-test` sends a test message on every \
                channel. Without a channel table nothing is sent.",
        keys: &[
            key(
                "events",
                "list of strings",
                "all five",
                Some("[\"scaled\", \"refused\", \"blocked\", \"failed\", \"recovered\"]"),
                "[\"failed\", \"recovered\"]",
                "Which events are told: scaled (a resource changed: from, to, reason), refused \
                 (the VM refused a live change; it was reverted), blocked (a change is needed \
                 but cannot be made: not hotplug-ready, host full, at the maximum), failed (API, \
                 authentication or TLS errors, of a VM or a cluster), recovered (a failure that \
                 was told has cleared).",
            ),
            key(
                "min_interval",
                "duration",
                "\"1h\"",
                Some("\"1h\""),
                "\"30m\"",
                "At most one message per VM (or cluster) and event kind in this time; a blocked \
                 or failed condition that could not be told yet is told later if it still holds. \
                 \"0s\" tells every event.",
            ),
            key(
                "max_per_hour",
                "integer",
                "12",
                Some("12"),
                "6",
                "At most this many messages in any hour (one message goes to every channel); \
                 the next message says how many events were held back. At least 1.",
            ),
            key(
                "timeout",
                "duration",
                "\"10s\"",
                Some("\"10s\""),
                "\"5s\"",
                "For one attempt on one channel (connect, TLS, send). Channels are sent to at \
                 the same time.",
            ),
            key(
                "proxy",
                "string",
                "none (direct)",
                None,
                "\"http://proxy.example.com:3128\"",
                "An HTTP proxy for Gotify and the webhooks (not for email): \"http://host:port\", \
                 used as a CONNECT tunnel. Proxy variables of the environment are ignored.",
            ),
        ],
    },
    Section {
        name: "[notify.email]",
        about: "Email through SMTP: STARTTLS (required, port 587), implicit TLS (port 465), or \
                plain for a relay on this machine. The password comes from password_file, \
                password, the systemd credential smtp.password, or $PVESCALE_SMTP_PASSWORD.",
        keys: &[
            key(
                "enabled",
                "boolean",
                "true",
                Some("true"),
                "false",
                "false keeps the table but sends nothing (and reads no password).",
            ),
            key(
                "host",
                "string",
                "none (required)",
                None,
                "\"smtp.example.com\"",
                "The SMTP server's host name or IP address; a TLS certificate must be for it.",
            ),
            key(
                "port",
                "integer",
                "587, 465 with security = \"tls\", 25 with \"none\"",
                None,
                "587",
                "The SMTP server's port.",
            ),
            key(
                "security",
                "string",
                "\"starttls\" (\"tls\" when port = 465)",
                None,
                "\"starttls\"",
                "\"starttls\" (the server must offer it), \"tls\" (TLS from the first byte) or \
                 \"none\" (no encryption; with a login only to this machine).",
            ),
            key(
                "from",
                "string",
                "none (required)",
                None,
                "\"pvescale <pvescale@example.com>\"",
                "The sender address.",
            ),
            key(
                "to",
                "string or list of strings",
                "none (required)",
                None,
                "[\"ops@example.com\"]",
                "Who gets the mail.",
            ),
            key(
                "user",
                "string",
                "none: no login",
                None,
                "\"pvescale\"",
                "SMTP login name; then a password is needed.",
            ),
            key(
                "password_file",
                "path",
                "none",
                None,
                "\"/etc/pvescale/smtp.password\"",
                "A file holding only the SMTP password (mode 0600).",
            ),
            key(
                "password",
                "string",
                "none",
                None,
                "\"...\"",
                "The SMTP password inline (prefer password_file or a credential).",
            ),
            key(
                "ca_file",
                "path",
                "none: the system's root certificates",
                None,
                "\"/etc/pvescale/smtp-ca.pem\"",
                "Trust only the CA certificates in this PEM file for the server's certificate.",
            ),
            key(
                "events",
                "list of strings",
                "[notify] events",
                None,
                "[\"failed\", \"recovered\"]",
                "The events this channel gets (a subset of [notify] events).",
            ),
        ],
    },
    Section {
        name: "[notify.gotify]",
        about: "Gotify: POST <url>/message with the application token in the X-Gotify-Key \
                header. The token comes from token_file, token, the systemd credential \
                gotify.token, or $PVESCALE_GOTIFY_TOKEN.",
        keys: &[
            key(
                "enabled",
                "boolean",
                "true",
                Some("true"),
                "false",
                "false keeps the table but sends nothing (and reads no token).",
            ),
            key(
                "url",
                "string",
                "none (required)",
                None,
                "\"https://gotify.example.com\"",
                "The Gotify server's base URL.",
            ),
            key(
                "token_file",
                "path",
                "none",
                None,
                "\"/etc/pvescale/gotify.token\"",
                "A file holding only the application token (mode 0600).",
            ),
            key(
                "token",
                "string",
                "none",
                None,
                "\"...\"",
                "The application token inline (prefer token_file or a credential).",
            ),
            key(
                "ca_file",
                "path",
                "none: the system's root certificates",
                None,
                "\"/etc/pvescale/gotify-ca.pem\"",
                "Trust only the CA certificates in this PEM file.",
            ),
            key(
                "priority",
                "inline table",
                "{ scaled = 4, recovered = 4, blocked = 5, refused = 6, failed = 8 }",
                None,
                "{ failed = 9 }",
                "Gotify priority (0-10) per event kind; a message gets that of its most urgent \
                 event.",
            ),
            key(
                "events",
                "list of strings",
                "[notify] events",
                None,
                "[\"failed\", \"recovered\"]",
                "The events this channel gets (a subset of [notify] events).",
            ),
        ],
    },
    Section {
        name: "[[notify.webhook]]",
        about: "A JSON POST per message, to each [[notify.webhook]]. format picks the body: \
                \"json\" (pvescale's own: title, text, events), \"slack\" ({\"text\"}: Slack \
                incoming webhooks, Mattermost, Rocket.Chat), \"discord\" ({\"content\"}) or \
                \"ntfy\" (ntfy's JSON publishing; the URL names the topic). Webhook URLs and \
                header values are never shown in logs or errors.",
        keys: &[
            key(
                "enabled",
                "boolean",
                "true",
                Some("true"),
                "false",
                "false keeps the table but sends nothing.",
            ),
            key(
                "name",
                "string",
                "webhook[N]",
                None,
                "\"ntfy\"",
                "A label for logs and the run summary; unique.",
            ),
            key(
                "url",
                "string",
                "none",
                None,
                "\"https://ntfy.sh/pvescale-alerts\"",
                "Where to POST (http:// or https://). One of url and url_file is needed.",
            ),
            key(
                "url_file",
                "path",
                "none",
                None,
                "\"/etc/pvescale/slack.url\"",
                "A file holding only the URL, for URLs that are themselves secrets (Slack, \
                 Discord).",
            ),
            key(
                "format",
                "string",
                "\"json\"",
                None,
                "\"slack\"",
                "\"json\", \"slack\", \"discord\" or \"ntfy\".",
            ),
            key(
                "headers",
                "inline table",
                "{}",
                None,
                "{ Authorization = \"Bearer tk_...\" }",
                "Extra HTTP headers (values are never shown).",
            ),
            key(
                "ca_file",
                "path",
                "none: the system's root certificates",
                None,
                "\"/etc/pvescale/hooks-ca.pem\"",
                "Trust only the CA certificates in this PEM file.",
            ),
            key(
                "events",
                "list of strings",
                "[notify] events",
                None,
                "[\"failed\", \"recovered\"]",
                "The events this webhook gets (a subset of [notify] events).",
            ),
        ],
    },
];

/// The section named `name`.
pub fn section(name: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|s| s.name == name)
}
