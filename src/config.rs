//! Configuration: TOML, every table `deny_unknown_fields`, validated at load with
//! messages that name the key and the line. USD amounts are decimal strings.

use crate::money::Usd;
use crate::openai::models::Tier;
use crate::wallet::{KeyLocation, Source, Store};
use crate::x402::networks::{self, Network};
use alloy_primitives::Address;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8402";
pub const DEFAULT_UPSTREAM: &str = "https://agent402.tools";
/// Name of the app that unknown or missing API keys are charged to.
pub const DEFAULT_APP: &str = "default";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The x402-priced OpenAI-compatible upstream (scheme + host, optional path prefix).
    #[serde(default = "default_upstream")]
    pub upstream: String,
    /// Ledger and admin socket directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait for an upstream reply (each of the two legs).
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_secs: u64,
    /// Calls whose API key matches no app get 401 instead of the `default` app.
    #[serde(default)]
    pub reject_unknown_apps: bool,
    /// Permit a non-loopback `listen` (needs API keys on every app and `reject_unknown_apps`).
    #[serde(default)]
    pub allow_remote: bool,
    /// Extra `Host` names accepted besides localhost / 127.0.0.1 / [::1].
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the proxy (CORS). Empty: browsers are refused.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub wallet: WalletConfig,
    #[serde(default)]
    pub payment: PaymentConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
    /// Model → tier overrides (`"gpt-4o" = "pro"`), on top of what the upstream's model list says.
    #[serde(default)]
    pub tiers: BTreeMap<String, Tier>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WalletConfig {
    #[serde(default = "default_source")]
    pub source: Source,
    #[serde(default = "default_store")]
    pub store: Store,
    #[serde(default = "default_service")]
    pub keyring_service: String,
    #[serde(default = "default_user")]
    pub keyring_user: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    /// Networks we pay on, most preferred first (CAIP-2 or v1 names).
    #[serde(default = "default_networks")]
    pub networks: Vec<String>,
    /// Wallet-wide ceiling for a single call.
    #[serde(default = "default_max_per_call")]
    pub max_per_call: Usd,
    /// Longest authorization validity we sign (seller's `maxTimeoutSeconds`).
    #[serde(default = "default_max_timeout")]
    pub max_timeout_seconds: u64,
    /// When non-empty, the only `payTo` addresses we pay.
    #[serde(default)]
    pub pay_to: Vec<String>,
    /// JSON-RPC URL per network, for checking at-risk payments on chain.
    #[serde(default)]
    pub rpc: BTreeMap<String, String>,
    /// How often at-risk and rejected payments are checked on chain.
    #[serde(default = "default_resolve_every")]
    pub resolve_every_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<Usd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<Usd>,
    /// IANA zone in which daily and monthly windows reset.
    #[serde(default = "default_tz")]
    pub timezone: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_call: Option<Usd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<Usd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<Usd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Usd>,
    /// Allowed models (globs with `*`); absent: any model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Allowed price tiers (`budget`, `pro`, `premium`); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<Tier>>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8402))
}
fn default_upstream() -> String {
    DEFAULT_UPSTREAM.into()
}
fn default_upstream_timeout() -> u64 {
    300
}
fn default_source() -> Source {
    Source::Keyring
}
fn default_store() -> Store {
    Store::Auto
}
fn default_service() -> String {
    "x402d".into()
}
fn default_user() -> String {
    "wallet".into()
}
fn default_networks() -> Vec<String> {
    vec!["eip155:8453".into()]
}
fn default_max_per_call() -> Usd {
    Usd(500_000)
}
fn default_resolve_every() -> u64 {
    30
}
fn default_max_timeout() -> u64 {
    3600
}
fn default_tz() -> String {
    "UTC".into()
}

impl Default for WalletConfig {
    fn default() -> Self {
        WalletConfig {
            source: default_source(),
            store: default_store(),
            keyring_service: default_service(),
            keyring_user: default_user(),
        }
    }
}
impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            networks: default_networks(),
            max_per_call: default_max_per_call(),
            max_timeout_seconds: default_max_timeout(),
            pay_to: Vec::new(),
            rpc: BTreeMap::new(),
            resolve_every_secs: default_resolve_every(),
        }
    }
}
impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            daily: None,
            monthly: None,
            timezone: default_tz(),
        }
    }
}

/// The built-in `default` app: where calls with an unknown key are charged.
pub fn builtin_default_app() -> AppConfig {
    AppConfig {
        api_key: None,
        max_per_call: Some(Usd(50_000)),
        daily: Some(Usd(1_000_000)),
        monthly: Some(Usd(10_000_000)),
        total: None,
        models: None,
        tiers: None,
    }
}

/// A config error naming the file, line and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(p), Some(l)) => write!(f, "{}:{}: ", p.display(), l)?,
            (Some(p), None) => write!(f, "{}: ", p.display())?,
            (None, Some(l)) => write!(f, "line {l}: ")?,
            (None, None) => {}
        }
        if let Some(k) = &self.key {
            write!(f, "`{k}`: ")?;
        }
        f.write_str(&self.message)
    }
}
impl std::error::Error for ConfigError {}

/// Config plus everything derived from it at load.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
    pub networks: Vec<&'static Network>,
    pub pay_to: Option<Vec<Address>>,
    pub timezone: jiff::tz::TimeZone,
    pub upstream: hyper::Uri,
    pub state_dir: PathBuf,
    /// API key → app name.
    pub keys: BTreeMap<String, String>,
    /// Apps with the built-in default app filled in.
    pub apps: BTreeMap<String, AppConfig>,
}

impl Loaded {
    pub fn key_location(&self) -> KeyLocation {
        KeyLocation {
            source: self.config.wallet.source,
            store: self.config.wallet.store,
            service: self.config.wallet.keyring_service.clone(),
            user: self.config.wallet.keyring_user.clone(),
        }
    }

    /// The upstream URL for a path (and query) such as `/v1/models`, under its prefix.
    pub fn upstream_url(&self, path_and_query: &str) -> String {
        let base = &self.upstream;
        format!(
            "{}://{}{}{}",
            base.scheme_str().unwrap_or("https"),
            base.authority().map(|a| a.as_str()).unwrap_or(""),
            base.path().trim_end_matches('/'),
            path_and_query
        )
    }

    pub fn rpc_url(&self, net: &Network) -> Option<String> {
        for (k, v) in &self.config.payment.rpc {
            if networks::lookup(k).map(|n| n.caip2) == Some(net.caip2) {
                return if v.is_empty() { None } else { Some(v.clone()) };
            }
        }
        Some(net.default_rpc.to_string())
    }

    /// Resolves the app an API key names (None: unknown key and `reject_unknown_apps`).
    pub fn app_for_key(&self, key: Option<&str>) -> Option<&str> {
        match key.and_then(|k| self.keys.get(k)) {
            Some(app) => Some(app.as_str()),
            None if self.config.reject_unknown_apps => None,
            None => Some(DEFAULT_APP),
        }
    }
}

/// Where the config file is looked for when `--config` is not given.
pub fn resolve_path(cli: Option<&Path>) -> (Option<PathBuf>, bool) {
    if let Some(p) = cli {
        return (Some(p.to_path_buf()), true);
    }
    if let Some(p) = std::env::var_os("X402D_CONFIG").filter(|v| !v.is_empty()) {
        return (Some(PathBuf::from(p)), true);
    }
    if let Some(d) = std::env::var_os("CONFIGURATION_DIRECTORY").filter(|v| !v.is_empty()) {
        let first = std::env::split_paths(&d).next();
        if let Some(d) = first {
            return (Some(d.join("config.toml")), false);
        }
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    (base.map(|b| b.join("x402d").join("config.toml")), false)
}

/// Loads the config: an explicit path must exist; a missing default file means defaults.
pub fn load(cli: Option<&Path>) -> Result<Loaded, ConfigError> {
    let (path, explicit) = resolve_path(cli);
    let text = match &path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
            Err(e) => {
                return Err(ConfigError {
                    file: Some(p.clone()),
                    line: None,
                    key: None,
                    message: format!("cannot read the config file: {e}"),
                });
            }
        },
        None => None,
    };
    match text {
        Some(t) => parse(&t, path),
        None => parse("", None),
    }
}

/// Parses and validates config text.
pub fn parse(text: &str, file: Option<PathBuf>) -> Result<Loaded, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let line = line.map(|l| {
            // A span that starts right after a newline belongs to the next line.
            if e.span()
                .is_some_and(|s| text[..s.start.min(text.len())].ends_with('\n'))
            {
                l + 1
            } else {
                l
            }
        });
        ConfigError {
            file: file.clone(),
            line,
            key: None,
            message: e.message().trim().to_string(),
        }
    })?;
    validate(config, text, file)
}

fn validate(config: Config, text: &str, file: Option<PathBuf>) -> Result<Loaded, ConfigError> {
    let err = |table: Option<&str>, key: &str, message: String| {
        let full = match table {
            Some(t) => format!("{t}.{key}"),
            None => key.to_string(),
        };
        ConfigError {
            file: file.clone(),
            line: find_line(text, table, key),
            key: Some(full),
            message,
        }
    };

    let upstream: hyper::Uri = config.upstream.trim_end_matches('/').parse().map_err(|_| {
        err(
            None,
            "upstream",
            format!("{:?} is not a URL", config.upstream),
        )
    })?;
    match upstream.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(err(
                None,
                "upstream",
                "must start with https:// (or http:// for a local test seller)".into(),
            ));
        }
    }
    if upstream.host().is_none() || upstream.query().is_some() {
        return Err(err(
            None,
            "upstream",
            "must be scheme://host[:port][/prefix]".into(),
        ));
    }
    if config.upstream_timeout_secs == 0 || config.upstream_timeout_secs > 3600 {
        return Err(err(
            None,
            "upstream_timeout_secs",
            "must be between 1 and 3600".into(),
        ));
    }

    if !config.listen.ip().is_loopback() {
        if !config.allow_remote {
            return Err(err(
                None,
                "listen",
                format!(
                    "{} is not a loopback address; x402d spends money on request, so it listens on 127.0.0.1 unless `allow_remote = true`",
                    config.listen
                ),
            ));
        }
        if !config.reject_unknown_apps {
            return Err(err(
                None,
                "allow_remote",
                "a non-loopback listen address also needs `reject_unknown_apps = true`".into(),
            ));
        }
        if let Some((name, _)) = config.apps.iter().find(|(_, a)| a.api_key.is_none()) {
            return Err(err(
                Some(&format!("apps.{name}")),
                "api_key",
                "every app needs an api_key when allow_remote = true".into(),
            ));
        }
    }

    let mut nets: Vec<&'static Network> = Vec::new();
    if config.payment.networks.is_empty() {
        return Err(err(
            Some("payment"),
            "networks",
            "must name at least one network".into(),
        ));
    }
    for n in &config.payment.networks {
        let net = networks::lookup(n).ok_or_else(|| {
            err(
                Some("payment"),
                "networks",
                format!("unknown network {n:?}; known: {}", networks::known_names()),
            )
        })?;
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    if config.payment.max_per_call == Usd::ZERO {
        return Err(err(
            Some("payment"),
            "max_per_call",
            "must be above 0".into(),
        ));
    }
    if config.payment.max_timeout_seconds == 0 || config.payment.max_timeout_seconds > 86_400 {
        return Err(err(
            Some("payment"),
            "max_timeout_seconds",
            "must be between 1 and 86400".into(),
        ));
    }
    if config.payment.resolve_every_secs == 0 || config.payment.resolve_every_secs > 86_400 {
        return Err(err(
            Some("payment"),
            "resolve_every_secs",
            "must be between 1 and 86400".into(),
        ));
    }
    let pay_to = if config.payment.pay_to.is_empty() {
        None
    } else {
        let mut v = Vec::new();
        for a in &config.payment.pay_to {
            v.push(a.parse::<Address>().map_err(|_| {
                err(
                    Some("payment"),
                    "pay_to",
                    format!("{a:?} is not an 0x address"),
                )
            })?);
        }
        Some(v)
    };
    for (k, url) in &config.payment.rpc {
        if networks::lookup(k).is_none() {
            return Err(err(
                Some("payment.rpc"),
                k,
                format!("unknown network; known: {}", networks::known_names()),
            ));
        }
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err(
                Some("payment.rpc"),
                k,
                format!("{url:?} is not an http(s) URL"),
            ));
        }
    }

    let timezone = jiff::tz::TimeZone::get(&config.limits.timezone).map_err(|_| {
        err(
            Some("limits"),
            "timezone",
            format!(
                "unknown IANA time zone {:?} (e.g. \"UTC\", \"Europe/Berlin\")",
                config.limits.timezone
            ),
        )
    })?;

    let mut keys = BTreeMap::new();
    let mut apps = config.apps.clone();
    let builtin = builtin_default_app();
    let d = apps.entry(DEFAULT_APP.to_string()).or_default();
    // Fields of [apps.default] not given keep the built-in caps.
    d.max_per_call = d.max_per_call.or(builtin.max_per_call);
    d.daily = d.daily.or(builtin.daily);
    d.monthly = d.monthly.or(builtin.monthly);
    for (name, app) in &config.apps {
        let table = format!("apps.{name}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(err(
                None,
                &table,
                "app names may use letters, digits, '-', '_' and '.'".into(),
            ));
        }
        if let Some(k) = &app.api_key {
            if k.trim().is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(
                    Some(&table),
                    "api_key",
                    "must be a non-empty token without spaces".into(),
                ));
            }
            if let Some(other) = keys.insert(k.clone(), name.clone()) {
                return Err(err(
                    Some(&table),
                    "api_key",
                    format!("the same api_key is already used by [apps.{other}]"),
                ));
            }
        }
        if let Some(models) = &app.models
            && models.iter().any(|m| m.trim().is_empty())
        {
            {
                return Err(err(
                    Some(&table),
                    "models",
                    "entries must be non-empty".into(),
                ));
            }
        }
    }

    let state_dir = match &config.state_dir {
        Some(p) => p.clone(),
        None => default_state_dir(),
    };

    Ok(Loaded {
        networks: nets,
        pay_to,
        timezone,
        upstream,
        state_dir,
        keys,
        apps,
        file,
        config,
    })
}

/// `$STATE_DIRECTORY` (systemd), else `$XDG_STATE_HOME/x402d`, else `~/.local/state/x402d`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty())
        && let Some(first) = std::env::split_paths(&d).next()
    {
        return first;
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("x402d");
    }
    // root operating the system service (`sudo x402d status`): its StateDirectory.
    let system = PathBuf::from("/var/lib/x402d");
    if rustix::process::geteuid().is_root() && system.join("admin.sock").exists() {
        return system;
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/x402d"),
        None => PathBuf::from("/var/lib/x402d"),
    }
}

/// Best-effort line of `key` inside `[table]` (or at top level).
fn find_line(text: &str, table: Option<&str>, key: &str) -> Option<usize> {
    let mut in_table = table.is_none();
    let mut table_line = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').trim();
            let name = name.replace(['"', '\''], "");
            in_table = Some(name.as_str()) == table;
            if in_table {
                table_line = Some(i + 1);
            }
            if table.is_none() {
                in_table = false;
            }
            // A whole-table key such as `apps.x` points at its header.
            if table.is_none() && name == key {
                return Some(i + 1);
            }
            continue;
        }
        if in_table {
            let k = t
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .replace(['"', '\''], "");
            if k == key {
                return Some(i + 1);
            }
        }
    }
    table_line
}

/// Glob with `*` only (any run of characters), case-sensitive.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.len() >= p.len() && rest.ends_with(p);
        } else if let Some(pos) = rest.find(p) {
            rest = &rest[pos + p.len()..];
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_defaults() {
        let l = parse("", None).unwrap();
        assert_eq!(l.config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(l.upstream.to_string(), "https://agent402.tools/");
        assert_eq!(l.networks[0].caip2, "eip155:8453");
        assert_eq!(l.config.payment.max_per_call, Usd(500_000));
        let d = &l.apps["default"];
        assert_eq!(d.max_per_call, Some(Usd(50_000)));
        assert_eq!(d.daily, Some(Usd(1_000_000)));
        assert_eq!(d.monthly, Some(Usd(10_000_000)));
        assert_eq!(l.app_for_key(Some("whatever")), Some("default"));
    }

    #[test]
    fn full_valid_config() {
        let t = r#"
listen = "127.0.0.1:9000"
upstream = "http://127.0.0.1:4021"
reject_unknown_apps = true
[wallet]
keyring_service = "svc"
[payment]
networks = ["base-sepolia", "eip155:8453"]
max_per_call = "0.10"
pay_to = ["0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"]
[payment.rpc]
"eip155:84532" = "http://127.0.0.1:8545"
[limits]
daily = "5"
timezone = "Europe/Berlin"
[apps.cursor]
api_key = "sk-cursor"
max_per_call = "0.05"
daily = "2.00"
models = ["gpt-4o-mini", "anthropic/*"]
"#;
        let l = parse(t, None).unwrap();
        assert_eq!(l.networks[0].chain_id, 84532);
        assert_eq!(l.app_for_key(Some("sk-cursor")), Some("cursor"));
        assert_eq!(l.app_for_key(Some("nope")), None);
        assert_eq!(l.app_for_key(None), None);
        assert_eq!(l.apps["cursor"].daily, Some(Usd(2_000_000)));
        assert_eq!(l.config.limits.daily, Some(Usd(5_000_000)));
        assert_eq!(
            l.rpc_url(networks::lookup("base-sepolia").unwrap())
                .as_deref(),
            Some("http://127.0.0.1:8545")
        );
    }

    fn bad(t: &str) -> String {
        parse(t, Some(PathBuf::from("c.toml")))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn invalid_configs_name_key_and_line() {
        assert_eq!(
            bad("listen = \"127.0.0.1:1\"\nlisten_port = 3\n"),
            "c.toml:2: unknown field `listen_port`, expected one of `listen`, `upstream`, `state_dir`, `upstream_timeout_secs`, `reject_unknown_apps`, `allow_remote`, `allowed_hosts`, `allowed_origins`, `wallet`, `payment`, `limits`, `apps`, `tiers`"
        );
        let e = bad("[payment]\nnetworks = [\"ethereum\"]\n");
        assert!(
            e.starts_with("c.toml:2: `payment.networks`: unknown network \"ethereum\""),
            "{e}"
        );
        let e = bad("[apps.x]\ndaily = 2.0\n");
        assert!(e.contains("c.toml:2") && e.contains("write \"2\""), "{e}");
        let e = bad("[apps.x]\ndaily = \"1.0000001\"\n");
        assert!(e.contains("6 decimal places"), "{e}");
        let e = bad("[limits]\ntimezone = \"Mars/Base\"\n");
        assert!(e.starts_with("c.toml:2: `limits.timezone`"), "{e}");
        let e = bad("listen = \"0.0.0.0:8402\"\n");
        assert!(
            e.starts_with("c.toml:1: `listen`") && e.contains("allow_remote"),
            "{e}"
        );
        let e = bad("[apps.a]\napi_key = \"k\"\n[apps.b]\napi_key = \"k\"\n");
        assert!(e.starts_with("c.toml:4: `apps.b.api_key`"), "{e}");
        let e = bad("upstream = \"ftp://x\"\n");
        assert!(e.contains("`upstream`"), "{e}");
        let e = bad("[payment]\npay_to = [\"bob\"]\n");
        assert!(e.contains("`payment.pay_to`"), "{e}");
        let e = bad("[wallet]\nsource = \"file\"\n");
        assert!(e.starts_with("c.toml:2"), "{e}");
        let e = bad("[payment.rpc]\n\"eip155:1\" = \"http://x\"\n");
        assert!(e.contains("`payment.rpc.eip155:1`"), "{e}");
    }

    #[test]
    fn fixtures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
        for entry in std::fs::read_dir(dir.join("valid")).unwrap() {
            let p = entry.unwrap().path();
            let t = std::fs::read_to_string(&p).unwrap();
            parse(&t, Some(p.clone())).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for entry in std::fs::read_dir(dir.join("invalid")).unwrap() {
            let p = entry.unwrap().path();
            let t = std::fs::read_to_string(&p).unwrap();
            let e = parse(&t, Some(p.clone())).expect_err(&p.display().to_string());
            // The first line of each invalid fixture is `# expect: <substring>`.
            let want = t.lines().next().unwrap().trim_start_matches("# expect: ");
            assert!(e.to_string().contains(want), "{}: got {e}", p.display());
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("anthropic/*", "anthropic/claude-3"));
        assert!(!glob_match("anthropic/*", "openai/gpt"));
        assert!(glob_match("gpt-4o-mini", "gpt-4o-mini"));
        assert!(!glob_match("gpt-4o-mini", "gpt-4o-mini-2"));
        assert!(glob_match("*mini*", "gpt-4o-mini-2"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "a-b-c"));
        assert!(!glob_match("a*b*c", "a-c-b"));
    }
}
