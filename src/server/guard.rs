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
    let Some((name, p)) = split_host_port(host) else {
        return false;
    };
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
        || (cfg.config.allow_remote && name == listen_name(cfg.config.listen.ip()))
}

/// The listen address as it appears in `Host` (IPv6 in brackets).
fn listen_name(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// Parses `Host` strictly: `name`, `name:port`, `[v6]` or `[v6]:port`, where a name is
/// letters, digits, `-` and `.`, a bracketed address is a valid IPv6 address and a port
/// is 1-5 digits. Anything else (`[::1]evil`, `[::1]:8402junk`, `:80`, `a:+80`) is `None`.
fn split_host_port(h: &str) -> Option<(&str, Option<u16>)> {
    let (name, rest) = if h.starts_with('[') {
        let end = h.find(']')?;
        let inner = &h[1..end];
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        (&h[..=end], &h[end + 1..])
    } else {
        match h.find(':') {
            Some(i) => (&h[..i], &h[i..]),
            None => (h, ""),
        }
    };
    if !h.starts_with('[')
        && (name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return None;
    }
    if rest.is_empty() {
        return Some((name, None));
    }
    let digits = rest.strip_prefix(':')?;
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, Some(digits.parse().ok()?)))
}

/// Browser requests that may never make x402d pay. The `Origin` check alone cannot
/// stop them: an `<img src>`, `<script src>`, a link or a form navigation sends no
/// `Origin` on GET. Browsers label every request with `Sec-Fetch-*`, so a paid route
/// only accepts a fetch()/XHR (`Sec-Fetch-Mode: cors|same-origin`, `Sec-Fetch-Dest:
/// empty`), and a cross-site one only from an allowed origin (`allowed` is what
/// [`check`] returned). Clients that are not browsers send none of these headers.
pub fn check_paid(headers: &HeaderMap, allowed: Option<&str>) -> Result<(), ProxyError> {
    let get = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<non-ASCII>").to_ascii_lowercase())
    };
    let refuse = |what: String| Err(ProxyError::BrowserRequestNotAllowed(clip(&what)));
    if let Some(mode) = get("sec-fetch-mode")
        && !matches!(mode.as_str(), "cors" | "same-origin")
    {
        return refuse(format!("Sec-Fetch-Mode: {mode}"));
    }
    if let Some(dest) = get("sec-fetch-dest")
        && dest != "empty"
    {
        return refuse(format!("Sec-Fetch-Dest: {dest}"));
    }
    if let Some(site) = get("sec-fetch-site")
        && site != "same-origin"
        && allowed.is_none()
    {
        return refuse(format!("Sec-Fetch-Site: {site} without an allowed Origin"));
    }
    Ok(())
}

/// The dashboard (`/`, its assets) and its read-only JSON API (`/api/…`): a `Host`
/// is required and must pass the same rules as every request (DNS rebinding); an
/// `Origin`, when sent, must be the page's own (`http://` + that `Host`), whatever
/// `allowed_origins` says; and the API answers a browser only for a same-origin
/// request (`Sec-Fetch-Site: same-origin`), so no other site can read the spend.
/// The page itself may be opened from anywhere (typed, bookmarked, a link); it
/// cannot be framed (see its headers).
pub fn check_dashboard(
    cfg: &Loaded,
    headers: &HeaderMap,
    port: u16,
    api: bool,
) -> Result<(), ProxyError> {
    let host = headers
        .get(HOST)
        .ok_or_else(|| ProxyError::HostNotAllowed("<none>".into()))?
        .to_str()
        .map_err(|_| ProxyError::HostNotAllowed("<non-ASCII>".into()))?;
    if !host_allowed(cfg, host, port) {
        return Err(ProxyError::HostNotAllowed(clip(host)));
    }
    if let Some(o) = headers.get(ORIGIN) {
        let o = o
            .to_str()
            .map_err(|_| ProxyError::OriginNotAllowed("<non-ASCII>".into()))?;
        if !o.eq_ignore_ascii_case(&format!("http://{host}")) {
            return Err(ProxyError::OriginNotAllowed(clip(o)));
        }
    }
    if api && let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("<non-ASCII>").to_ascii_lowercase();
        if site != "same-origin" {
            return Err(ProxyError::BrowserRequestNotAllowed(clip(&format!(
                "Sec-Fetch-Site: {site}"
            ))));
        }
    }
    Ok(())
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
            "[::1]",
        ] {
            assert!(check(&cfg, &hm(Some(ok), None), 8402).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8402",
            "127.0.0.1:9999",
            "localhost.evil.com",
            "127.0.0.1:x",
            "[::1]evil",
            "[::1]:8402junk",
            "[::1]:8402:8402",
            "[::1",
            "[evil]:8402",
            "localhost:+8402",
            "localhost:",
            ":8402",
            "localhost:8402:8402",
            "local_host:8402",
            "127.0.0.1:108402",
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

    #[test]
    fn a_remote_listen_address_is_a_host_name_too() {
        for (listen, host) in [
            ("192.168.1.5:8402", "192.168.1.5:8402"),
            ("[fd00::5]:8402", "[fd00::5]:8402"),
        ] {
            let cfg = crate::config::parse(
                &format!(
                    "listen = \"{listen}\"\nallow_remote = true\nreject_unknown_apps = true\n[apps.default]\napi_key = \"k\"\n"
                ),
                None,
            )
            .unwrap();
            assert!(check(&cfg, &hm(Some(host), None), 8402).is_ok(), "{host}");
            assert!(check(&cfg, &hm(Some("[fd00::6]:8402"), None), 8402).is_err());
        }
    }

    #[test]
    fn dashboard_is_same_origin_only() {
        let cfg =
            crate::config::parse("allowed_origins = [\"http://localhost:3000\"]\n", None).unwrap();
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let host = ("host", "127.0.0.1:8402");
        for api in [true, false] {
            assert!(check_dashboard(&cfg, &with(&[host]), 8402, api).is_ok());
            let own = with(&[
                host,
                ("origin", "http://127.0.0.1:8402"),
                ("sec-fetch-site", "same-origin"),
            ]);
            assert!(check_dashboard(&cfg, &own, 8402, api).is_ok());
            for bad in [
                with(&[]),
                with(&[("host", "evil.example:8402")]),
                with(&[("host", "127.0.0.1:9999")]),
            ] {
                assert!(matches!(
                    check_dashboard(&cfg, &bad, 8402, api),
                    Err(ProxyError::HostNotAllowed(_))
                ));
            }
            // Even an origin allowed to *call* the proxy may not read the dashboard.
            for o in ["http://localhost:3000", "https://evil.example", "null"] {
                let mut h = with(&[host]);
                h.insert(ORIGIN, HeaderValue::from_static(o));
                assert!(matches!(
                    check_dashboard(&cfg, &h, 8402, api),
                    Err(ProxyError::OriginNotAllowed(_))
                ));
            }
        }
        for site in ["cross-site", "same-site", "none"] {
            let h = with(&[host, ("sec-fetch-site", site)]);
            assert!(matches!(
                check_dashboard(&cfg, &h, 8402, true),
                Err(ProxyError::BrowserRequestNotAllowed(_))
            ));
            assert!(
                check_dashboard(&cfg, &h, 8402, false).is_ok(),
                "the page: {site}"
            );
        }
    }

    #[test]
    fn browser_requests_cannot_pay() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        // Not a browser, or a browser's fetch() from an allowed origin: fine.
        assert!(check_paid(&HeaderMap::new(), None).is_ok());
        let fetch = with(&[
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(check_paid(&fetch, Some("http://localhost:3000")).is_ok());
        // The same fetch without an allowed Origin is refused.
        assert!(check_paid(&fetch, None).is_err());
        // Subresource loads and navigations: refused even from an allowed origin.
        for bad in [
            with(&[("sec-fetch-dest", "image")]),
            with(&[("sec-fetch-mode", "no-cors")]),
            with(&[
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ]),
            with(&[
                ("sec-fetch-dest", "script"),
                ("sec-fetch-site", "same-site"),
            ]),
        ] {
            for origin in [None, Some("http://localhost:3000")] {
                assert!(
                    matches!(
                        check_paid(&bad, origin),
                        Err(ProxyError::BrowserRequestNotAllowed(_))
                    ),
                    "{bad:?}"
                );
            }
        }
        assert!(check_paid(&with(&[("sec-fetch-site", "none")]), None).is_err());
    }
}
