//! Configuration: TOML, every table `deny_unknown_fields`, validated at load with
//! messages that name the key and the line. USD amounts are decimal strings.

use crate::money::Usd;
use crate::openai::models::Tier;
use crate::wallet::{KeyLocation, Source, Store};
use crate::x402::networks::{self, Network, SvmNetwork};
use crate::x402::select::SvmPolicy;
use crate::x402::svm::Pubkey;
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
    #[serde(default = "default_listen", deserialize_with = "listen_addr")]
    pub listen: SocketAddr,
    /// The x402-priced OpenAI-compatible upstream (scheme + host, optional path prefix).
    #[serde(default = "default_upstream")]
    pub upstream: String,
    /// Ledger and admin socket directory: absolute, or `~/…` (expanded with `$HOME`).
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
    pub apps: BTreeMap<String, AppTable>,
    /// Model → tier overrides (`"gpt-4o" = "pro"`), on top of what the upstream's model list says.
    #[serde(default)]
    pub tiers: BTreeMap<String, Tier>,
    /// Model aliases for the Anthropic front door (`"claude-opus-5-5" = "anthropic/claude-opus-4.1"`,
    /// glob keys allowed): requested id → upstream id. See `anthropic::models`.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
}

/// `[ledger]`: where spend is recorded. `redb` (default): one file in the state
/// dir. `postgres`: a shared database, so several daemons share caps (team mode).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    #[serde(default)]
    pub backend: LedgerBackend,
    /// `postgres://user@host:port/db[?sslmode=require|verify-full&sslrootcert=…]`.
    /// Shown (and re-serialized by `config check`) without its password.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "url_without_password"
    )]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LedgerBackend {
    #[default]
    Redb,
    Postgres,
}

fn url_without_password<S: serde::Serializer>(u: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => s.serialize_str(&crate::ledger::postgres::redact(u)),
        None => s.serialize_none(),
    }
}

/// `[alerts]`: budget alerts when spend crosses a fraction of a cap (see src/alerts.rs).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Fractions of each cap that raise an alert, once per window each.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<f64>,
    /// An http(s) URL that gets one JSON object per alert (POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Also show a desktop notification (org.freedesktop.Notifications on the session bus).
    #[serde(default)]
    pub desktop: bool,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            thresholds: default_thresholds(),
            webhook: None,
            desktop: false,
        }
    }
}

fn default_thresholds() -> Vec<f64> {
    vec![0.8, 1.0]
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
    /// The resolver releases nothing on the word of an RPC whose head block is
    /// older than this by wall time (a stuck node); see src/chain.rs.
    #[serde(default = "default_max_rpc_lag")]
    pub max_rpc_lag_secs: u64,
    /// When a paid request fails after the payment left (reset, timeout, 5xx),
    /// re-send the very same signed payment at most this many more times to get
    /// the paid answer back (a re-send can never pay twice); 0 turns it off.
    #[serde(default = "default_recover_attempts")]
    pub recover_attempts: u32,
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

/// A spend cap as written in an `[apps.*]` table: an amount, or `"unlimited"`
/// (explicitly no cap). A cap left out is inherited, see [`AppConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    Limit(Usd),
    Unlimited,
}

impl Cap {
    pub const UNLIMITED: &'static str = "unlimited";
}

impl Serialize for Cap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cap::Limit(u) => u.serialize(s),
            Cap::Unlimited => s.serialize_str(Cap::UNLIMITED),
        }
    }
}

impl<'de> Deserialize<'de> for Cap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::IntoDeserializer;
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Cap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal USD string such as \"0.05\", or \"unlimited\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cap, E> {
                if v.trim().eq_ignore_ascii_case(Cap::UNLIMITED) {
                    return Ok(Cap::Unlimited);
                }
                Usd::deserialize(v.into_deserializer()).map(Cap::Limit)
            }
            // Numbers get the amount's own "write it quoted" message.
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Cap, E> {
                Usd::deserialize(v.into_deserializer()).map(Cap::Limit)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Cap, E> {
                Usd::deserialize(v.into_deserializer()).map(Cap::Limit)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Cap, E> {
                Usd::deserialize(v.into_deserializer()).map(Cap::Limit)
            }
        }
        d.deserialize_any(V)
    }
}

/// An `[apps.NAME]` table as written. Caps left out are inherited at load
/// (when the config is validated); the rest of x402d only sees the resolved
/// [`AppConfig`].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_call: Option<Cap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<Cap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<Cap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Cap>,
    /// Allowed models (globs with `*`); absent: any model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Allowed price tiers (`budget`, `pro`, `premium`); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<Tier>>,
}

/// An app's effective settings. Caps are resolved: a cap an `[apps.NAME]` table
/// leaves out comes from `[apps.default]`, whose own gaps are the built-in
/// default caps; `None` means no cap (only ever from an explicit `"unlimited"`,
/// or `total`, which has no built-in value).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AppConfig {
    pub api_key: Option<String>,
    pub max_per_call: Option<Usd>,
    pub daily: Option<Usd>,
    pub monthly: Option<Usd>,
    pub total: Option<Usd>,
    /// Allowed models (globs with `*`); absent: any model.
    pub models: Option<Vec<String>>,
    /// Allowed price tiers (`budget`, `pro`, `premium`); absent: all.
    pub tiers: Option<Vec<Tier>>,
}

impl AppConfig {
    /// Resolves a table's caps over the caps it inherits.
    fn resolve(table: &AppTable, inherited: &AppConfig) -> AppConfig {
        let cap = |own: Option<Cap>, from: Option<Usd>| match own {
            Some(Cap::Limit(u)) => Some(u),
            Some(Cap::Unlimited) => None,
            None => from,
        };
        AppConfig {
            api_key: table.api_key.clone(),
            max_per_call: cap(table.max_per_call, inherited.max_per_call),
            daily: cap(table.daily, inherited.daily),
            monthly: cap(table.monthly, inherited.monthly),
            total: cap(table.total, inherited.total),
            models: table.models.clone(),
            tiers: table.tiers.clone(),
        }
    }
}

/// `listen` is an IP:port; a host name gets an error naming the key and the IP to write.
fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        let port = s.rsplit_once(':').map_or("8402", |(_, p)| p);
        let port = if port.parse::<u16>().is_ok() { port } else { "8402" };
        serde::de::Error::custom(format!(
            "`listen`: {s:?} is not an IP:port address (host names are not resolved); write \"127.0.0.1:{port}\""
        ))
    })
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
fn default_max_rpc_lag() -> u64 {
    300
}
fn default_recover_attempts() -> u32 {
    3
}
/// Most re-sends one paid call may make.
pub const MAX_RECOVER_ATTEMPTS: u32 = 10;
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
            max_rpc_lag_secs: default_max_rpc_lag(),
            recover_attempts: default_recover_attempts(),
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

/// Why an address may not be served under a config (see `Config::remote_refusal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub table: Option<String>,
    pub key: &'static str,
    pub message: String,
}

impl Config {
    /// The loopback rule, for `listen` and for a socket passed by systemd alike: a
    /// non-loopback address (the unspecified 0.0.0.0 and [::] included) needs
    /// `allow_remote = true`, `reject_unknown_apps = true` and an api_key on every app.
    pub fn remote_refusal(&self, addr: SocketAddr) -> Option<Refusal> {
        if addr.ip().is_loopback() {
            return None;
        }
        let refuse = |table: Option<String>, key, message| {
            Some(Refusal {
                table,
                key,
                message,
            })
        };
        if !self.allow_remote {
            return refuse(
                None,
                "listen",
                format!(
                    "{addr} is not a loopback address; x402d spends money on request, so it listens on 127.0.0.1 unless `allow_remote = true`"
                ),
            );
        }
        if !self.reject_unknown_apps {
            return refuse(
                None,
                "allow_remote",
                "a non-loopback listen address also needs `reject_unknown_apps = true`".into(),
            );
        }
        if let Some((name, _)) = self.apps.iter().find(|(_, a)| a.api_key.is_none()) {
            return refuse(
                Some(format!("apps.{name}")),
                "api_key",
                "every app needs an api_key when allow_remote = true".into(),
            );
        }
        None
    }
}

/// Config plus everything derived from it at load.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
    /// The EVM networks of `payment.networks`, in its order.
    pub networks: Vec<&'static Network>,
    /// The Solana networks of `payment.networks`, in its order.
    pub svm_networks: Vec<&'static SvmNetwork>,
    /// CAIP-2 ids of every network in `payment.networks`, in its order (the
    /// preference across EVM and Solana).
    pub network_order: Vec<&'static str>,
    pub pay_to: Option<Vec<Address>>,
    /// The base58 entries of `payment.pay_to` (set whenever `pay_to` is).
    pub svm_pay_to: Option<Vec<Pubkey>>,
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

    /// The Solana side of the payment policy (see `select::choose_any`).
    pub fn svm_policy(&self) -> SvmPolicy {
        SvmPolicy {
            networks: self.svm_networks.clone(),
            order: self.network_order.clone(),
            pay_to: self.svm_pay_to.clone(),
        }
    }

    /// The JSON-RPC URL for a Solana network: `[payment.rpc]`, else its public one.
    pub fn svm_rpc_url(&self, net: &SvmNetwork) -> Option<String> {
        for (k, v) in &self.config.payment.rpc {
            if networks::lookup_svm(k).map(|n| n.caip2) == Some(net.caip2) {
                return if v.is_empty() { None } else { Some(v.clone()) };
            }
        }
        Some(net.default_rpc.to_string())
    }

    pub fn rpc_url(&self, net: &Network) -> Option<String> {
        for (k, v) in &self.config.payment.rpc {
            if networks::lookup(k).map(|n| n.caip2) == Some(net.caip2) {
                return if v.is_empty() { None } else { Some(v.clone()) };
            }
        }
        Some(net.default_rpc.to_string())
    }

    /// Every app's effective caps, built-in `default` included, as TOML comments
    /// (what `x402d config check` prints after the config itself).
    pub fn effective_caps_report(&self) -> String {
        let show = |v: Option<Usd>| v.map_or_else(|| Cap::UNLIMITED.to_string(), |u| u.to_string());
        let mut rows: Vec<[String; 5]> =
            vec![["app", "max_per_call", "daily", "monthly", "total"].map(String::from)];
        // `default` first: the others inherit from it.
        let names = std::iter::once(DEFAULT_APP).chain(
            self.apps
                .keys()
                .map(String::as_str)
                .filter(|n| *n != DEFAULT_APP),
        );
        for name in names {
            let Some(app) = self.apps.get(name) else {
                continue;
            };
            let table = self.config.apps.get(name).cloned().unwrap_or_default();
            let from = if name == DEFAULT_APP {
                " (built-in)"
            } else {
                " (inherited)"
            };
            let cell = |own: Option<Cap>, v: Option<Usd>| match own {
                Some(_) => show(v),
                None => format!("{}{from}", show(v)),
            };
            rows.push([
                name.to_string(),
                cell(table.max_per_call, app.max_per_call),
                cell(table.daily, app.daily),
                cell(table.monthly, app.monthly),
                cell(table.total, app.total),
            ]);
        }
        let mut widths = [0usize; 5];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::from(
            "\n# Effective caps per app (USD). An app inherits each cap it leaves out from\n\
             # [apps.default], whose own gaps are the built-in caps; \"unlimited\" opts out.\n",
        );
        for r in &rows {
            let mut line = String::from("#");
            for (w, c) in widths.iter().zip(r) {
                line.push_str(&format!("  {c:<w$}"));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str(&format!(
            "# Wallet-wide, across all apps: max_per_call {} (payment.max_per_call), daily {}, monthly {} ([limits]).\n",
            self.config.payment.max_per_call,
            show(self.config.limits.daily),
            show(self.config.limits.monthly),
        ));
        out
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
    if let Some(host) = plain_http_remote(&upstream) {
        return Err(err(
            None,
            "upstream",
            format!(
                "{:?} is plain http:// to {host}, which is not a loopback host: anyone on the network path could rewrite the seller's payment request (its payTo address and price) or read your prompts. Use https:// (http:// is allowed only for 127.0.0.0/8, [::1] and localhost)",
                config.upstream
            ),
        ));
    }
    if config.upstream_timeout_secs == 0 || config.upstream_timeout_secs > 3600 {
        return Err(err(
            None,
            "upstream_timeout_secs",
            "must be between 1 and 3600".into(),
        ));
    }

    if let Some(r) = config.remote_refusal(config.listen) {
        return Err(err(r.table.as_deref(), r.key, r.message));
    }

    let mut nets: Vec<&'static Network> = Vec::new();
    if config.payment.networks.is_empty() {
        return Err(err(
            Some("payment"),
            "networks",
            "must name at least one network".into(),
        ));
    }
    let mut svm_nets: Vec<&'static SvmNetwork> = Vec::new();
    let mut order: Vec<&'static str> = Vec::new();
    for n in &config.payment.networks {
        if let Some(net) = networks::lookup_svm(n) {
            if !svm_nets.contains(&net) {
                svm_nets.push(net);
                order.push(net.caip2);
            }
            continue;
        }
        let net = networks::lookup(n).ok_or_else(|| {
            err(
                Some("payment"),
                "networks",
                format!("unknown network {n:?}; known: {}", networks::known_names()),
            )
        })?;
        if !nets.contains(&net) {
            nets.push(net);
            order.push(net.caip2);
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
    if config.payment.recover_attempts > MAX_RECOVER_ATTEMPTS {
        return Err(err(
            Some("payment"),
            "recover_attempts",
            format!("must be between 0 (off) and {MAX_RECOVER_ATTEMPTS}"),
        ));
    }
    if config.payment.resolve_every_secs == 0 || config.payment.resolve_every_secs > 86_400 {
        return Err(err(
            Some("payment"),
            "resolve_every_secs",
            "must be between 1 and 86400".into(),
        ));
    }
    let (pay_to, svm_pay_to) = if config.payment.pay_to.is_empty() {
        (None, None)
    } else {
        let (mut v, mut s) = (Vec::new(), Vec::new());
        for a in &config.payment.pay_to {
            if let Some(k) = Pubkey::parse(a).filter(|_| !a.starts_with("0x")) {
                s.push(k);
                continue;
            }
            v.push(a.parse::<Address>().map_err(|_| {
                err(
                    Some("payment"),
                    "pay_to",
                    format!("{a:?} is not an 0x address or a base58 Solana address"),
                )
            })?);
        }
        (Some(v), Some(s))
    };
    for (k, url) in &config.payment.rpc {
        if networks::caip2_of(k).is_none() {
            return Err(err(
                Some("payment.rpc"),
                k,
                format!("unknown network; known: {}", networks::known_names()),
            ));
        }
        if url.is_empty() {
            continue;
        }
        let uri = url
            .parse::<hyper::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        let Some(uri) = uri else {
            return Err(err(
                Some("payment.rpc"),
                k,
                format!("{url:?} is not an http(s) URL"),
            ));
        };
        if let Some(host) = plain_http_remote(&uri) {
            return Err(err(
                Some("payment.rpc"),
                k,
                format!(
                    "{url:?} is plain http:// to {host}, which is not a loopback host: anyone on the network path could answer that a signed payment's nonce is unused, and x402d would release spend that really happened. Use https:// (http:// is allowed only for 127.0.0.0/8, [::1] and localhost; \"\" disables on-chain checks)"
                ),
            ));
        }
    }

    for t in &config.alerts.thresholds {
        if !(t.is_finite() && *t > 0.0 && *t <= 1.0) {
            return Err(err(
                Some("alerts"),
                "thresholds",
                format!(
                    "{t} is not a fraction of a cap; write numbers above 0 and at most 1, e.g. [0.8, 1.0]"
                ),
            ));
        }
    }
    if let Some(url) = &config.alerts.webhook {
        let uri = url
            .parse::<hyper::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        let Some(uri) = uri else {
            return Err(err(
                Some("alerts"),
                "webhook",
                format!("{url:?} is not an http(s) URL"),
            ));
        };
        if let Some(host) = plain_http_remote(&uri) {
            return Err(err(
                Some("alerts"),
                "webhook",
                format!(
                    "{url:?} is plain http:// to {host}, which is not a loopback host: anyone on the network path could read your spend or drop the alerts. Use https:// (http:// is allowed only for 127.0.0.0/8, [::1] and localhost)"
                ),
            ));
        }
    }

    if config.ledger.backend == LedgerBackend::Postgres {
        match &config.ledger.url {
            None => {
                return Err(err(
                    Some("ledger"),
                    "url",
                    "backend = \"postgres\" needs url = \"postgres://user@host:port/db\"".into(),
                ));
            }
            Some(u) => {
                crate::ledger::postgres::parse_url(u).map_err(|m| err(Some("ledger"), "url", m))?;
            }
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
    // Caps are resolved once, here: [apps.default] over the built-in caps, then every
    // other app over [apps.default], so an app that sets no caps keeps the safety net.
    let default_table = config.apps.get(DEFAULT_APP).cloned().unwrap_or_default();
    let default_app = AppConfig::resolve(&default_table, &builtin_default_app());
    let mut apps: BTreeMap<String, AppConfig> = config
        .apps
        .iter()
        .filter(|(name, _)| name.as_str() != DEFAULT_APP)
        .map(|(name, table)| (name.clone(), AppConfig::resolve(table, &default_app)))
        .collect();
    apps.insert(DEFAULT_APP.to_string(), default_app);
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
        Some(p) => expand_state_dir(p, std::env::var_os("HOME").as_deref())
            .map_err(|m| err(None, "state_dir", m))?,
        None => default_state_dir(),
    };

    Ok(Loaded {
        networks: nets,
        svm_networks: svm_nets,
        network_order: order,
        pay_to,
        svm_pay_to,
        timezone,
        upstream,
        state_dir,
        keys,
        apps,
        file,
        config,
    })
}

/// `Some(host)` when `uri` is plain `http://` to a host that is not loopback
/// (127.0.0.0/8, ::1, `localhost`): on such a link anyone on the path can rewrite
/// what x402d pays or believes about the chain.
fn plain_http_remote(uri: &hyper::Uri) -> Option<String> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
            std::net::IpAddr::V4(v4) => v4.is_loopback(),
            std::net::IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        });
    (!loopback).then(|| host.to_string())
}

/// `state_dir` as written → an absolute path: `~` and `~/…` are `$HOME`; anything
/// else must already be absolute (a relative path would follow the working
/// directory, and with it the ledger, so caps would silently start over).
fn expand_state_dir(p: &Path, home: Option<&std::ffi::OsStr>) -> Result<PathBuf, String> {
    let text = p.to_string_lossy();
    if text == "~" || text.starts_with("~/") {
        let home = home
            .filter(|h| Path::new(h).is_absolute())
            .ok_or_else(|| {
                format!("{text:?} starts with ~ but $HOME is not set to an absolute path; write an absolute path")
            })?;
        let rest = text.strip_prefix('~').unwrap_or("").trim_start_matches('/');
        let mut out = PathBuf::from(home);
        if !rest.is_empty() {
            out.push(rest);
        }
        return Ok(out);
    }
    if text.starts_with('~') {
        return Err(format!(
            "{text:?}: only `~` and `~/…` (your $HOME) are expanded; write an absolute path"
        ));
    }
    if !p.is_absolute() {
        return Err(format!(
            "{text:?} is a relative path; it would depend on the directory x402d is started from (a new ledger, and fresh caps, in each); write an absolute path or ~/…"
        ));
    }
    Ok(p.to_path_buf())
}

/// `$STATE_DIRECTORY` (systemd), else `$XDG_STATE_HOME/x402d` (if absolute), else
/// `~/.local/state/x402d`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty())
        && let Some(first) = std::env::split_paths(&d).next()
    {
        return first;
    }
    // A relative $XDG_STATE_HOME is invalid (XDG spec) and would follow the working directory.
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|v| Path::new(v).is_absolute()) {
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
            "c.toml:2: unknown field `listen_port`, expected one of `listen`, `upstream`, `state_dir`, `upstream_timeout_secs`, `reject_unknown_apps`, `allow_remote`, `allowed_hosts`, `allowed_origins`, `wallet`, `payment`, `limits`, `apps`, `tiers`, `models`, `alerts`, `ledger`"
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
    fn solana_networks_and_rpc() {
        let t = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/solana.toml"),
        )
        .unwrap();
        let l = parse(&t, None).unwrap();
        assert_eq!(
            l.network_order,
            vec![
                "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
                "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
                "eip155:8453"
            ]
        );
        assert_eq!(l.networks.len(), 1);
        assert_eq!(l.svm_networks.len(), 2);
        let dev = networks::lookup_svm("solana-devnet").unwrap();
        let main = networks::lookup_svm("solana").unwrap();
        assert_eq!(l.svm_rpc_url(dev).as_deref(), Some("http://127.0.0.1:8899"));
        assert_eq!(
            l.svm_rpc_url(main).as_deref(),
            Some("https://api.mainnet-beta.solana.com")
        );
        assert_eq!(l.svm_pay_to.as_ref().unwrap().len(), 1);
        assert_eq!(l.pay_to.as_ref().unwrap().len(), 1);
        let p = l.svm_policy();
        assert_eq!(p.order, l.network_order);
        // A plain-http RPC off loopback is refused for Solana too.
        let e = bad("[payment.rpc]\n\"solana\" = \"http://api.example\"\n");
        assert!(e.contains("`payment.rpc.solana`"), "{e}");
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
    fn plain_http_only_to_loopback_hosts() {
        for ok in [
            "http://127.0.0.1:4021",
            "http://127.9.8.7/prefix",
            "http://localhost:8080",
            "http://LocalHost",
            "http://[::1]:4021",
            "http://[::ffff:127.0.0.1]:4021",
            "https://agent402.tools",
            "https://10.0.0.5:4021",
        ] {
            let l = parse(&format!("upstream = \"{ok}\"\n"), None);
            assert!(l.is_ok(), "{ok}: {:?}", l.err());
        }
        for (url, host) in [
            ("http://agent402.tools", "agent402.tools"),
            ("http://10.0.0.5:4021", "10.0.0.5"),
            ("http://0.0.0.0:4021", "0.0.0.0"),
            ("http://[::2]:4021", "[::2]"),
            ("http://localhost.evil.example", "localhost.evil.example"),
            ("http://127.0.0.1.nip.io", "127.0.0.1.nip.io"),
        ] {
            let e = bad(&format!("listen = \"127.0.0.1:1\"\nupstream = \"{url}\"\n"));
            assert!(
                e.starts_with("c.toml:2: `upstream`: ")
                    && e.contains(&format!("plain http:// to {host},"))
                    && e.contains("payTo")
                    && e.contains("Use https://"),
                "{e}"
            );
        }
    }

    #[test]
    fn plain_http_rpc_only_to_loopback_hosts() {
        let rpc = |url: &str| format!("[payment.rpc]\n\"eip155:84532\" = \"{url}\"\n");
        for ok in [
            "http://127.0.0.1:8545",
            "http://localhost:8545",
            "https://sepolia.base.org",
            "https://base-mainnet.example/v3/KEY?x=1",
            "",
        ] {
            let l = parse(&rpc(ok), None);
            assert!(l.is_ok(), "{ok}: {:?}", l.err());
        }
        let e = bad(&rpc("http://sepolia.base.org"));
        assert!(
            e.starts_with("c.toml:2: `payment.rpc.eip155:84532`: ")
                && e.contains("plain http:// to sepolia.base.org,")
                && e.contains("release")
                && e.contains("Use https://"),
            "{e}"
        );
        let e = bad(&rpc("ftp://x"));
        assert!(e.contains("is not an http(s) URL"), "{e}");
        let e = bad(&rpc("sepolia.base.org"));
        assert!(e.contains("is not an http(s) URL"), "{e}");
    }

    #[test]
    fn alerts_table() {
        let l = parse("", None).unwrap();
        assert_eq!(l.config.alerts, AlertsConfig::default());
        assert_eq!(l.config.alerts.thresholds, vec![0.8, 1.0]);
        let l = parse(
            "[alerts]\nthresholds = [0.5]\nwebhook = \"http://127.0.0.1:9/hook\"\ndesktop = true\n",
            None,
        )
        .unwrap();
        assert_eq!(l.config.alerts.thresholds, vec![0.5]);
        assert!(l.config.alerts.desktop);
        assert!(parse("[alerts]\nwebhook = \"https://hooks.example/x\"\n", None).is_ok());
        let e = bad("[alerts]\nwebhook = \"http://hooks.example/x\"\n");
        assert!(
            e.starts_with("c.toml:2: `alerts.webhook`: ") && e.contains("not a loopback host"),
            "{e}"
        );
        let e = bad("[alerts]\nwebhook = \"ftp://x\"\n");
        assert!(e.contains("is not an http(s) URL"), "{e}");
        for t in ["0", "1.5", "-0.2", "nan"] {
            let e = bad(&format!("[alerts]\nthresholds = [{t}]\n"));
            assert!(e.contains("`alerts.thresholds`"), "{t}: {e}");
        }
        let e = bad("[alerts]\nthreshold = [0.5]\n");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn state_dir_tilde_and_relative() {
        let home = Some(std::ffi::OsStr::new("/home/u"));
        let x = |p: &str| expand_state_dir(Path::new(p), home);
        assert_eq!(x("~"), Ok(PathBuf::from("/home/u")));
        assert_eq!(x("~/"), Ok(PathBuf::from("/home/u")));
        assert_eq!(
            x("~/.local/state/x402d"),
            Ok(PathBuf::from("/home/u/.local/state/x402d"))
        );
        assert_eq!(x("/var/lib/x402d"), Ok(PathBuf::from("/var/lib/x402d")));
        assert!(x("~bob/state").unwrap_err().contains("only `~` and `~/…`"));
        for rel in ["state", "./state", "", "x/~/y"] {
            assert!(x(rel).unwrap_err().contains("relative path"), "{rel}");
        }
        for home in [None, Some(std::ffi::OsStr::new("relative/home"))] {
            let e = expand_state_dir(Path::new("~/s"), home).unwrap_err();
            assert!(e.contains("$HOME"), "{e}");
        }
        // Through the parser: the error names the key and says what to write.
        let e = bad("state_dir = \"state\"\n");
        assert!(
            e.starts_with("c.toml:1: `state_dir`: \"state\" is a relative path")
                && e.contains("absolute path or ~/"),
            "{e}"
        );
        if let Some(h) = std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute()) {
            let l = parse("state_dir = \"~/.local/state/x402d\"\n", None).unwrap();
            assert_eq!(l.state_dir, PathBuf::from(h).join(".local/state/x402d"));
        }
    }

    fn caps(l: &Loaded, app: &str) -> [Option<Usd>; 4] {
        let a = &l.apps[app];
        [a.max_per_call, a.daily, a.monthly, a.total]
    }

    #[test]
    fn apps_inherit_caps_from_default() {
        let usd = |s: &str| Some(Usd::parse(s).unwrap());
        let builtin = [usd("0.05"), usd("1"), usd("10"), None];
        // An app with only a key keeps the built-in safety net.
        let l = parse("[apps.x]\napi_key = \"k\"\n", None).unwrap();
        assert_eq!(caps(&l, "x"), builtin);
        assert_eq!(caps(&l, "default"), builtin);
        // [apps.default] overrides field by field, and the others follow it.
        let l = parse(
            "[apps.default]\ndaily = \"3\"\nmonthly = \"unlimited\"\n\
             [apps.x]\napi_key = \"k\"\n\
             [apps.y]\napi_key = \"k2\"\nmax_per_call = \"0.2\"\nmonthly = \"7\"\ntotal = \"100\"\n",
            None,
        )
        .unwrap();
        assert_eq!(caps(&l, "default"), [usd("0.05"), usd("3"), None, None]);
        assert_eq!(caps(&l, "x"), [usd("0.05"), usd("3"), None, None]);
        assert_eq!(caps(&l, "y"), [usd("0.2"), usd("3"), usd("7"), usd("100")]);
        // "unlimited" opts out of one cap only.
        let l = parse(
            "[apps.x]\napi_key = \"k\"\ndaily = \"unlimited\"\ntotal = \"Unlimited\"\n",
            None,
        )
        .unwrap();
        assert_eq!(caps(&l, "x"), [usd("0.05"), None, usd("10"), None]);
        // The config as written is printed back with its "unlimited" (and re-parses to the same).
        let text = toml::to_string_pretty(&l.config).unwrap();
        assert!(text.contains("daily = \"unlimited\""), "{text}");
        assert_eq!(parse(&text, None).unwrap().apps, l.apps);
        // Bad caps still say what to write.
        let e = bad("[apps.x]\ndaily = \"lots\"\n");
        assert!(e.starts_with("c.toml:2:"), "{e}");
        let e = bad("[apps.x]\ndaily = 3\n");
        assert!(e.contains("write \"3\""), "{e}");
    }

    #[test]
    fn effective_caps_report_lists_every_app() {
        let l = parse(
            "[payment]\nmax_per_call = \"0.5\"\n[limits]\ndaily = \"5\"\n\
             [apps.default]\ndaily = \"2\"\n\
             [apps.bot]\napi_key = \"k\"\ntotal = \"unlimited\"\n\
             [apps.aa]\napi_key = \"k2\"\nmax_per_call = \"0.01\"\n",
            None,
        )
        .unwrap();
        assert_eq!(
            l.effective_caps_report(),
            "
# Effective caps per app (USD). An app inherits each cap it leaves out from
# [apps.default], whose own gaps are the built-in caps; \"unlimited\" opts out.
#  app      max_per_call      daily          monthly         total
#  default  0.05 (built-in)   2              10 (built-in)   unlimited (built-in)
#  aa       0.01              2 (inherited)  10 (inherited)  unlimited (inherited)
#  bot      0.05 (inherited)  2 (inherited)  10 (inherited)  unlimited
# Wallet-wide, across all apps: max_per_call 0.5 (payment.max_per_call), daily 5, monthly unlimited ([limits]).
"
        );
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
