//! The local-request guard: only requests addressed to this machine's loopback
//! names (defeats DNS rebinding) and, from browsers, only allowed origins.

use crate::config::Loaded;
use crate::error::ProxyError;
use hyper::HeaderMap;
use hyper::header::{HOST, ORIGIN};

/// Checks `Host` and `Origin`; returns the allowed origin to echo in CORS headers.
pub fn check(cfg: &Loaded, headers: &HeaderMap, port: u16) -> Result<Option<String>, ProxyError> {
    if let Some(host) = headers.get(HOST) {
        let host = host
            .to_str()
            .map_err(|_| ProxyError::HostNotAllowed("<non-ASCII>".into()))?;
        if !host_allowed(cfg, host, port) {
            return Err(ProxyError::HostNotAllowed(clip(host)));
        }
    }
    match headers.get(ORIGIN) {
        None => Ok(None),
        Some(o) => {
            let o = o
                .to_str()
                .map_err(|_| ProxyError::OriginNotAllowed("<non-ASCII>".into()))?;
            if cfg
                .config
                .allowed_origins
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
            {
                Ok(Some(o.to_string()))
            } else {
                Err(ProxyError::OriginNotAllowed(clip(o)))
            }
        }
    }
}

fn host_allowed(cfg: &Loaded, host: &str, port: u16) -> bool {
    let (name, p) = split_host_port(host);
    if let Some(p) = p
        && p != port
    {
        return false;
    }
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]")
        || cfg
            .config
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&name))
        || (cfg.config.allow_remote && name == cfg.config.listen.ip().to_string())
}

fn split_host_port(h: &str) -> (&str, Option<u16>) {
    if h.starts_with('[') {
        // [::1]:8402
        if let Some(end) = h.find(']') {
            let name = &h[..=end];
            let port = h[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok());
            return (name, port);
        }
        return (h, None);
    }
    match h.rsplit_once(':') {
        Some((n, p)) => match p.parse() {
            Ok(p) => (n, Some(p)),
            Err(_) => (h, Some(0)),
        },
        None => (h, None),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn hm(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(HOST, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hosts_and_origins() {
        let cfg = crate::config::parse(
            "allowed_hosts = [\"x402d.lan\"]\nallowed_origins = [\"http://localhost:3000\"]\n",
            None,
        )
        .unwrap();
        for ok in [
            "localhost:8402",
            "127.0.0.1:8402",
            "[::1]:8402",
            "localhost",
            "X402D.lan:8402",
        ] {
            assert!(check(&cfg, &hm(Some(ok), None), 8402).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8402",
            "127.0.0.1:9999",
            "localhost.evil.com",
            "127.0.0.1:x",
        ] {
            assert!(
                matches!(
                    check(&cfg, &hm(Some(bad), None), 8402),
                    Err(ProxyError::HostNotAllowed(_))
                ),
                "{bad}"
            );
        }
        assert!(check(&cfg, &hm(None, None), 8402).is_ok());
        assert_eq!(
            check(
                &cfg,
                &hm(Some("localhost:8402"), Some("http://localhost:3000")),
                8402
            )
            .unwrap(),
            Some("http://localhost:3000".into())
        );
        assert!(matches!(
            check(
                &cfg,
                &hm(Some("localhost:8402"), Some("https://evil.example")),
                8402
            ),
            Err(ProxyError::OriginNotAllowed(_))
        ));
        assert!(matches!(
            check(&cfg, &hm(Some("localhost:8402"), Some("null")), 8402),
            Err(ProxyError::OriginNotAllowed(_))
        ));
    }
}
