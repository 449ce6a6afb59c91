//! `[[cluster]]`: URLs, TLS, authentication and secrets, timeouts.

use super::*;
use crate::config::Activity;
use crate::proxy::ProxyUrl;

impl Validator<'_> {
    pub(super) fn cluster(&mut self, key: &KeyPath, c: &RawCluster) -> Option<ClusterConfig> {
        let before = self.problems.len();
        let name_ok = valid_cluster_name(&c.name);
        if !name_ok {
            self.problem(
                &key.key("name"),
                "must be 1-64 characters: letters, digits, '-', '_' or '.', starting with a letter \
                 or digit (it names credential files and environment variables)",
            );
        }

        let mut urls = Vec::new();
        match normalize_url(&c.url) {
            Ok(u) => urls.push(u),
            Err(why) => self.problem(&key.key("url"), why),
        }
        for (j, u) in c.fallback_urls.iter().enumerate() {
            let k = key.key("fallback_urls").index(j);
            match normalize_url(u) {
                Ok(u) if urls.contains(&u) => self.problem(&k, format!("{u} is listed twice")),
                Ok(u) => urls.push(u),
                Err(why) => self.problem(&k, why),
            }
        }

        let tls = self.tls(key, c);
        let timeout = c.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        // Unset, it follows a shorter `timeout`: a default the user never wrote must not
        // make their config invalid.
        let connect_timeout = c
            .connect_timeout
            .map_or(DEFAULT_CONNECT_TIMEOUT.min(timeout), |d| d.0);
        if timeout.is_zero() {
            self.problem(&key.key("timeout"), "must be more than 0s");
        }
        if connect_timeout.is_zero() {
            self.problem(&key.key("connect_timeout"), "must be more than 0s");
        } else if connect_timeout > timeout {
            self.problem(
                &key.key("connect_timeout"),
                format!(
                    "{} must not be longer than timeout ({}), which bounds the whole request",
                    fmt_duration(connect_timeout),
                    fmt_duration(timeout)
                ),
            );
        }

        let task_timeout = c.task_timeout.map_or(DEFAULT_TASK_TIMEOUT, |d| d.0);
        if task_timeout.is_zero() {
            self.problem(&key.key("task_timeout"), "must be more than 0s");
        }

        let active = match c.active.as_deref() {
            None | Some("auto") => Activity::Auto,
            Some("always") => Activity::Always,
            Some(other) => {
                self.problem(
                    &key.key("active"),
                    format!(
                        "{other:?} is not \"auto\" (on a member node, only the cluster's active \
                         scaler acts) or \"always\""
                    ),
                );
                Activity::Auto
            }
        };
        if let Some(node) = &c.local_node
            && (node.is_empty()
                || !node
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-'))
        {
            self.problem(
                &key.key("local_node"),
                "must be a Proxmox VE node name (letters, digits and -), e.g. \"pve1\"",
            );
        }

        let proxy = self.proxy(&key.key("proxy"), c.proxy.as_deref());

        let auth = if name_ok { self.auth(key, c) } else { None };
        if self.problems.len() > before {
            return None;
        }
        let (auth, secret_source) = auth?;
        Some(ClusterConfig {
            target: ClusterTarget {
                name: c.name.clone(),
                urls,
                auth,
                tls: tls?,
                timeout,
                connect_timeout,
                proxy,
            },
            secret_source,
            task_timeout,
            active,
            local_node: c.local_node.clone(),
        })
    }

    /// A `proxy` key: an `http://host:port` CONNECT proxy (see `crate::proxy`).
    pub(super) fn proxy(&mut self, key: &KeyPath, raw: Option<&str>) -> Option<ProxyUrl> {
        match ProxyUrl::parse(raw?) {
            Ok(proxy) => Some(proxy),
            Err(why) => {
                self.problem(key, why);
                None
            }
        }
    }

    pub(super) fn unique_cluster_names(&mut self, clusters: &[RawCluster]) {
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut by_env: HashMap<String, usize> = HashMap::new();
        for (i, c) in clusters.iter().enumerate() {
            let key = root().key("cluster").index(i).key("name");
            if let Some(first) = by_name.insert(c.name.to_ascii_lowercase(), i) {
                self.problem(
                    &key,
                    format!(
                        "cluster name {:?} is already used by cluster[{first}]; names must be unique \
                         (ignoring case)",
                        c.name
                    ),
                );
            } else if let Some(first) = by_env.insert(secrets::env_suffix(&c.name), i) {
                self.problem(
                    &key,
                    format!(
                        "cluster names {:?} and {:?} (cluster[{first}]) map to the same environment \
                         variable {}; rename one",
                        c.name,
                        clusters[first].name,
                        SecretKind::TokenSecret.env_var(&c.name)
                    ),
                );
            }
        }
    }

    pub(super) fn tls(&mut self, key: &KeyPath, c: &RawCluster) -> Option<TlsMode> {
        let insecure = c.insecure == Some(true);
        let set: Vec<&str> = [
            c.ca_file.as_ref().map(|_| "ca_file"),
            c.fingerprint.as_ref().map(|_| "fingerprint"),
            insecure.then_some("insecure = true"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() > 1 {
            let k = if c.fingerprint.is_some() && c.ca_file.is_some() {
                key.key("fingerprint")
            } else {
                key.key("insecure")
            };
            self.problem(
                &k,
                format!(
                    "{} are alternatives: set one of ca_file, fingerprint or insecure = true \
                     (or none, for the system's root certificates)",
                    set.join(" and ")
                ),
            );
            return None;
        }
        if let Some(p) = &c.ca_file {
            let path = self.resolve_path(p);
            return match fs::read(&path) {
                Ok(pem) if contains(&pem, b"-----BEGIN CERTIFICATE-----") => {
                    self.ca_file_others_could_change(&key.key("ca_file"), &path);
                    Some(TlsMode::CaFile(path))
                }
                Ok(_) => {
                    self.problem(
                        &key.key("ca_file"),
                        format!(
                            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); on a \
                             Proxmox node the cluster CA is /etc/pve/pve-root-ca.pem",
                            path.display()
                        ),
                    );
                    None
                }
                Err(e) => {
                    self.problem(
                        &key.key("ca_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            };
        }
        if let Some(fp) = &c.fingerprint {
            return match normalize_fingerprint(fp) {
                Ok(fp) => Some(TlsMode::Fingerprint(fp)),
                Err(why) => {
                    self.problem(&key.key("fingerprint"), why);
                    None
                }
            };
        }
        if insecure {
            self.warn(
                &key.key("insecure"),
                format_args!(
                    "TLS certificate verification is off for cluster {:?}: anyone in the path can \
                     read the API credentials; use ca_file or fingerprint",
                    c.name
                ),
            );
            return Some(TlsMode::Insecure);
        }
        Some(TlsMode::SystemRoots)
    }

    pub(super) fn auth(
        &mut self,
        key: &KeyPath,
        c: &RawCluster,
    ) -> Option<(crate::pve::Auth, SecretSource)> {
        let password_keys = [
            c.password_file.as_ref().map(|_| "password_file"),
            c.password.as_ref().map(|_| "password"),
        ];
        let token_keys = [
            c.token_secret_file.as_ref().map(|_| "token_secret_file"),
            c.token_secret.as_ref().map(|_| "token_secret"),
        ];
        let (kind, id) = match (&c.token, &c.user) {
            (Some(_), Some(_)) => {
                self.problem(
                    &key.key("user"),
                    "token and user are alternatives: use an API token (recommended) or a user with \
                     a password, not both",
                );
                return None;
            }
            (None, None) => {
                self.problem(
                    key,
                    "set token = \"user@realm!tokenid\" (an API token, recommended) or \
                     user = \"user@realm\"",
                );
                return None;
            }
            (Some(token), None) => {
                for k in password_keys.into_iter().flatten() {
                    self.problem(
                        &key.key(k),
                        "belongs to user login, but this cluster uses token",
                    );
                }
                if let Err(why) = check_token_id(token) {
                    self.problem(&key.key("token"), why);
                }
                (SecretKind::TokenSecret, token)
            }
            (None, Some(user)) => {
                for k in token_keys.into_iter().flatten() {
                    self.problem(
                        &key.key(k),
                        "belongs to token login, but this cluster uses user",
                    );
                }
                if let Err(why) = check_user_id(user) {
                    self.problem(&key.key("user"), why);
                }
                (SecretKind::Password, user)
            }
        };
        let (file, inline) = if kind == SecretKind::TokenSecret {
            (&c.token_secret_file, &c.token_secret)
        } else {
            (&c.password_file, &c.password)
        };
        if file.is_some() && inline.is_some() {
            self.problem(
                &key.key(kind.inline_key()),
                format!("set {} or {}, not both", kind.file_key(), kind.inline_key()),
            );
            return None;
        }
        let file = file.as_ref().map(|p| self.resolve_path(p));
        let resolved = secrets::resolve(
            kind,
            &c.name,
            file.as_deref(),
            inline.as_ref().map(|s| &s.0),
            self.env,
        );
        let (secret, source) = match resolved {
            Ok(r) => r,
            Err(why) => {
                let k = match (&file, inline) {
                    (Some(_), _) => key.key(kind.file_key()),
                    (None, Some(_)) => key.key(kind.inline_key()),
                    (None, None) => key.clone(),
                };
                self.problem(&k, why);
                return None;
            }
        };
        if let Some(warning) = secrets::whitespace_warning(&secret, &source) {
            self.warn(&key.key(kind.file_key()), warning);
        }
        if let SecretSource::File(p) = &source {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = fs::metadata(p)
                && meta.permissions().mode() & 0o004 != 0
            {
                self.warn(
                    &key.key(kind.file_key()),
                    format_args!(
                        "{} is readable by everyone; run `chmod 600 {}`",
                        p.display(),
                        p.display()
                    ),
                );
            }
        }
        let auth = if kind == SecretKind::TokenSecret {
            Auth::Token {
                id: id.clone(),
                secret,
            }
        } else {
            Auth::Password {
                user: id.clone(),
                password: secret,
            }
        };
        Some((auth, source))
    }
}

pub(super) fn valid_cluster_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `user@realm!tokenid`. Never quotes the value: a pasted `id=secret` must not end up in logs.
pub(super) fn check_token_id(token: &str) -> Result<(), String> {
    if token.contains('=') || token.chars().any(char::is_whitespace) {
        return Err(
            "must be only the token ID, user@realm!tokenid, without the secret; put the secret in \
             token_secret_file (value not shown)"
                .to_owned(),
        );
    }
    let ok = token.split_once('!').is_some_and(|(user, id)| {
        check_user_id(user).is_ok()
            && !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    });
    if ok {
        Ok(())
    } else {
        Err(
            "must be an API token ID: user@realm!tokenid, e.g. \"pvescale@pve!autoscale\""
                .to_owned(),
        )
    }
}

/// `user@realm`.
pub(super) fn check_user_id(user: &str) -> Result<(), String> {
    let ok = user.rsplit_once('@').is_some_and(|(name, realm)| {
        !name.is_empty()
            && !realm.is_empty()
            && !user.contains('!')
            && !user.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    if ok {
        Ok(())
    } else {
        Err("must be user@realm, e.g. \"pvescale@pve\" or \"root@pam\"".to_owned())
    }
}
