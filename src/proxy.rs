//! The HTTP proxy of a connection: only one the config names (`proxy = "http://host:port"` of
//! a cluster or of `[notify]`), reached with an HTTP CONNECT tunnel that carries our own TLS
//! end to end. A proxy in the environment (`HTTPS_PROXY`, `ALL_PROXY`, ...) is ignored: those
//! are set for people's shells, and a scaler that silently sends its API token's traffic
//! wherever a login shell points is worse than one that needs to be told.

use std::fmt;

/// A validated `http://host[:port]` proxy (no credentials, no path).
#[derive(Clone)]
pub struct ProxyUrl {
    proxy: ureq::Proxy,
    text: String,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProxyUrl").field(&self.text).finish()
    }
}

impl PartialEq for ProxyUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for ProxyUrl {}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl ProxyUrl {
    /// Parses a proxy URL; the error says what is accepted (and never repeats the text, which
    /// could hold a password).
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let lower = text.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix("http://") else {
            return Err(
                "only HTTP CONNECT proxies are supported, written \"http://host:port\" \
                        (TLS to the proxy itself, and SOCKS, are not)"
                    .to_string(),
            );
        };
        if rest.contains('@') {
            return Err(
                "a proxy URL with a user or password is not supported (pvescale does \
                        not authenticate to proxies): allow this host on the proxy instead"
                    .to_string(),
            );
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#']) {
            return Err("must be just \"http://host:port\", without a path".to_string());
        }
        let proxy = ureq::Proxy::new(text)
            .map_err(|e| format!("not a valid \"http://host:port\" proxy URL ({e})"))?;
        Ok(ProxyUrl {
            proxy,
            text: format!("http://{authority}"),
        })
    }

    /// ureq's form of it.
    pub fn ureq(&self) -> ureq::Proxy {
        self.proxy.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_proxies_only_without_credentials_or_path() {
        let p = ProxyUrl::parse("http://proxy.example.com:3128").unwrap();
        assert_eq!(p.to_string(), "http://proxy.example.com:3128");
        assert_eq!(p.ureq().port(), 3128);
        assert_eq!(
            ProxyUrl::parse("HTTP://10.0.0.1:8080/")
                .unwrap()
                .ureq()
                .host(),
            "10.0.0.1"
        );
        for (bad, says) in [
            ("https://p:3128", "only HTTP CONNECT"),
            ("socks5://p:1080", "only HTTP CONNECT"),
            ("p:3128", "only HTTP CONNECT"),
            ("http://user:pw@p:3128", "user or password"),
            ("http://p:3128/path", "without a path"),
            ("http://", "without a path"),
        ] {
            let err = ProxyUrl::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains("pw@"), "no password echoed: {err}");
        }
    }
}
