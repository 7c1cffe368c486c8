//! `x402d doctor`: checks in order, each with what to do when it fails.

use crate::config::Loaded;
use crate::money::Usd;
use crate::wallet::{self, WalletError};
use crate::x402::select;
use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub level: Level,
    pub name: &'static str,
    pub detail: String,
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level: Level::Ok,
        name,
        detail: detail.into(),
        fix: None,
    }
}
fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Fail,
        name,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}
fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Warn,
        name,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}
fn skip(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level: Level::Skip,
        name,
        detail: detail.into(),
        fix: None,
    }
}

/// Runs every check after the config one (which the caller did by loading `cfg`).
pub async fn run(cfg: &Loaded, daemon_running: bool) -> Vec<Check> {
    let mut out = Vec::new();
    let file = match &cfg.file {
        Some(p) if p.exists() => p.display().to_string(),
        _ => "built-in defaults (no config file)".into(),
    };
    out.push(ok("config", file));

    // Wallet.
    let loc = cfg.key_location();
    let loaded = tokio::task::spawn_blocking(move || wallet::load(&loc)).await;
    let l = cfg.key_location();
    let store = tokio::task::spawn_blocking(move || wallet::ops::StoreInfo::for_location(&l))
        .await
        .unwrap_or_else(|_| wallet::ops::StoreInfo::for_location(&cfg.key_location()));
    let wallet = match loaded {
        Ok(Ok(w)) => {
            out.push(ok(
                "wallet",
                format!("{} ({:?} source)", w.address(), cfg.config.wallet.source),
            ));
            match &store.caveat {
                Some(c) => out.push(warn(
                    "key store",
                    format!("{}: {c}", store.name),
                    "back the key up now: `x402d wallet export --keystore FILE`",
                )),
                None => out.push(ok(
                    "key store",
                    format!("{}; survives a reboot", store.name),
                )),
            }
            Some(w)
        }
        Ok(Err(e @ WalletError::Missing { .. })) if cfg.networks.is_empty() => {
            out.push(skip(
                "wallet",
                format!("no EVM network in payment.networks ({e})"),
            ));
            None
        }
        Ok(Err(e @ WalletError::Missing { .. })) => {
            out.push(fail(
                "wallet",
                e.to_string(),
                "x402d wallet import   (or: x402d wallet new, then fund it)",
            ));
            None
        }
        Ok(Err(e)) => {
            out.push(fail(
                "wallet",
                e.to_string(),
                "run inside a login session or `keyctl session - x402d doctor`; for system services use wallet.source = \"systemd-credential\"",
            ));
            None
        }
        Err(e) => {
            out.push(fail("wallet", e.to_string(), "report this bug"));
            None
        }
    };

    // State dir.
    let probe = cfg.state_dir.join(".doctor-probe");
    match std::fs::create_dir_all(&cfg.state_dir).and_then(|_| std::fs::write(&probe, b"x")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            out.push(ok("state dir", cfg.state_dir.display().to_string()));
        }
        Err(e) => out.push(fail(
            "state dir",
            format!("{}: {e}", cfg.state_dir.display()),
            "set `state_dir` to a writable directory",
        )),
    }

    // Ledger.
    let path = cfg.state_dir.join("ledger.redb");
    if let (crate::config::LedgerBackend::Postgres, Some(url)) =
        (&cfg.config.ledger.backend, &cfg.config.ledger.url)
    {
        // Team mode: the shared database, reachable whether or not a daemon runs.
        let shown = crate::ledger::postgres::redact(url);
        match crate::ledger::postgres::Postgres::reader(url, cfg.timezone.clone()).await {
            Ok(pg) => match pg.count().await {
                Ok(n) => out.push(ok("ledger", format!("{shown} ({n} payments, shared)"))),
                Err(e) => out.push(fail("ledger", e.to_string(), "check the database's state and permissions")),
            },
            Err(e) => out.push(fail(
                "ledger",
                e.to_string(),
                "check [ledger] url, that PostgreSQL is up, and the password ($PGPASSWORD or the pgpassword credential)",
            )),
        }
    } else if daemon_running {
        out.push(ok(
            "ledger",
            format!("{} (held by the running daemon)", path.display()),
        ));
    } else if !path.exists() {
        out.push(ok(
            "ledger",
            format!("{} (created on first start)", path.display()),
        ));
    } else {
        // The record count is kept by the file: no record is read.
        match crate::ledger::open_offline(&path).and_then(|db| crate::ledger::count_offline(&db)) {
            Ok(n) => out.push(ok("ledger", format!("{} ({n} payments)", path.display()))),
            Err(e) => out.push(fail(
                "ledger",
                e.to_string(),
                "move the file aside and restart; report the error",
            )),
        }
    }

    // Upstream: reachable, and its 402 is one we would pay.
    let client = match crate::upstream::client() {
        Ok(c) => c,
        Err(e) => {
            out.push(fail("upstream", e, "report this bug"));
            return out;
        }
    };
    let mut skew = None;
    out.push(upstream_check(cfg, &client, &mut skew).await);
    if let Some(skew) = skew {
        out.push(clock_check(skew));
    }

    // Chain: RPC reachable and the balance covers today's caps.
    for net in &cfg.networks {
        let Some(rpc) = cfg.rpc_url(net) else {
            out.push(warn(
                "chain",
                format!(
                    "{}: no RPC configured; at-risk payments stay counted until one is",
                    net.caip2
                ),
                format!("set [payment.rpc] \"{}\" = \"https://…\"", net.caip2),
            ));
            continue;
        };
        let Some(w) = &wallet else {
            out.push(skip("chain", format!("{}: no wallet to check", net.caip2)));
            continue;
        };
        match crate::chain::balance_of(&client, &rpc, net.usdc, w.address()).await {
            Ok(bal) => {
                let bal = u64::try_from(bal).unwrap_or(u64::MAX);
                let need = daily_need(cfg);
                let line = format!("{}: USDC balance ${} via {rpc}", net.caip2, Usd(bal));
                if need.is_some_and(|n| Usd(bal) < n) {
                    out.push(warn(
                        "chain",
                        format!("{line}, below today's caps (${})", need.unwrap_or_default()),
                        "fund the wallet or lower the daily caps",
                    ));
                } else {
                    out.push(ok("chain", line));
                }
            }
            Err(e) => out.push(fail(
                "chain",
                format!("{}: {e}", net.caip2),
                format!("check [payment.rpc] \"{}\"", net.caip2),
            )),
        }
    }

    out.extend(solana_checks(cfg, &client).await);

    out.push(unit_check().await);
    out
}

/// The Solana key, and per Solana network: the RPC (getHealth/getVersion), the
/// wallet's USDC token account and its balance. The facilitator pays the fees
/// and rent, so USDC is all the wallet needs.
async fn solana_checks(cfg: &Loaded, client: &crate::upstream::Client) -> Vec<Check> {
    use crate::chain::solana as sol;
    let mut out = Vec::new();
    if cfg.svm_networks.is_empty() {
        return out;
    }
    let loc = cfg.key_location();
    let wallet = match tokio::task::spawn_blocking(move || wallet::solana::load(&loc)).await {
        Ok(Ok(w)) => {
            out.push(ok("solana wallet", w.address().to_string()));
            Some(w)
        }
        Ok(Err(e @ WalletError::MissingSolana { .. })) => {
            out.push(fail(
                "solana wallet",
                e.to_string(),
                "x402d wallet import --solana   (or: x402d wallet new --solana, then fund its USDC)",
            ));
            None
        }
        Ok(Err(e)) => {
            out.push(fail(
                "solana wallet",
                e.to_string(),
                "check the key store (see the wallet check above)",
            ));
            None
        }
        Err(e) => {
            out.push(fail("solana wallet", e.to_string(), "report this bug"));
            None
        }
    };
    for net in &cfg.svm_networks {
        let Some(rpc) = cfg.svm_rpc_url(net) else {
            out.push(fail(
                "solana rpc",
                format!("{}: no RPC configured; x402d cannot pay there", net.caip2),
                format!("set [payment.rpc] \"{}\" = \"https://…\"", net.v1_name),
            ));
            continue;
        };
        match sol::health(client, &rpc).await {
            Ok(v) => out.push(ok(
                "solana rpc",
                format!("{}: healthy, solana-core {v}", net.caip2),
            )),
            Err(e) => {
                out.push(fail(
                    "solana rpc",
                    format!("{}: {e}", net.caip2),
                    format!("check [payment.rpc] \"{}\"", net.v1_name),
                ));
                continue;
            }
        }
        let Some(w) = &wallet else {
            out.push(skip(
                "solana usdc",
                format!("{}: no Solana wallet to check", net.caip2),
            ));
            continue;
        };
        let (Some(mint), owner) = (crate::x402::svm::Pubkey::parse(net.usdc_mint), w.address())
        else {
            continue;
        };
        let Some(ata) = crate::x402::svm::associated_token_account(&owner, &mint) else {
            continue;
        };
        match sol::token_balance(client, &rpc, &ata).await {
            Ok(Some(bal)) => {
                let line = format!(
                    "{}: USDC token account {ata}, balance ${}",
                    net.caip2,
                    Usd(bal)
                );
                match daily_need(cfg) {
                    Some(n) if Usd(bal) < n => out.push(warn(
                        "solana usdc",
                        format!("{line}, below today's caps (${n})"),
                        "fund the wallet's USDC or lower the daily caps",
                    )),
                    _ => out.push(ok("solana usdc", line)),
                }
            }
            Ok(None) => out.push(fail(
                "solana usdc",
                format!(
                    "{}: the wallet has no USDC token account ({ata})",
                    net.caip2
                ),
                format!(
                    "send USDC to {owner} on {} (that creates the account)",
                    net.v1_name
                ),
            )),
            Err(e) => out.push(fail(
                "solana usdc",
                format!("{}: {e}", net.caip2),
                format!("check [payment.rpc] \"{}\"", net.v1_name),
            )),
        }
    }
    out
}

/// The most that could be spent today under the caps.
fn daily_need(cfg: &Loaded) -> Option<Usd> {
    let apps: Option<u64> = cfg.apps.values().map(|a| a.daily.map(|d| d.atomic())).sum();
    match (cfg.config.limits.daily, apps) {
        (Some(w), Some(a)) => Some(Usd(w.atomic().min(a))),
        (Some(w), None) => Some(w),
        (None, a) => a.map(Usd),
    }
}

/// Whether this clock is close enough to the upstream's to sign payments
/// (`validBefore` is computed from it).
fn clock_check(skew: i64) -> Check {
    use crate::clock;
    let what = clock::describe(skew);
    let fix = "fix the system clock: enable NTP (e.g. `timedatectl set-ntp true`)";
    if skew.abs() > clock::MAX_SECS {
        fail("clock", format!("{what}; x402d refuses to sign"), fix)
    } else if skew.abs() >= clock::WARN_SECS {
        warn(
            "clock",
            format!(
                "{what} (payments valid under {} s are refused)",
                2 * skew.abs()
            ),
            fix,
        )
    } else {
        ok(
            "clock",
            format!("within {} s of the upstream's", skew.abs()),
        )
    }
}

/// The upstream's 402 and whether x402d would pay it; `skew` gets the clock skew
/// its `Date` header shows.
async fn upstream_check(
    cfg: &Loaded,
    client: &crate::upstream::Client,
    skew: &mut Option<i64>,
) -> Check {
    let uri = cfg.upstream_url("/v1/chat/completions");
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}]}"#;
    let req = match hyper::Request::post(&uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
    {
        Ok(r) => r,
        Err(e) => return fail("upstream", e.to_string(), "fix `upstream`"),
    };
    let resp = match tokio::time::timeout(Duration::from_secs(15), client.request(req)).await {
        Err(_) => {
            return fail(
                "upstream",
                format!("{uri}: no answer in 15 s"),
                "check the network and `upstream`",
            );
        }
        Ok(Err(e)) => {
            return fail(
                "upstream",
                format!("{uri}: {e}"),
                "check the network and `upstream`",
            );
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status != hyper::StatusCode::PAYMENT_REQUIRED {
        return warn(
            "upstream",
            format!("{uri} answered {status} to an unpaid call (expected 402)"),
            "check that `upstream` is an x402-priced OpenAI-compatible server",
        );
    }
    *skew = resp
        .headers()
        .get(hyper::header::DATE)
        .and_then(|d| crate::clock::skew_secs(d.as_bytes(), crate::now_ms()));
    let pr = match crate::pay::read_requirements(resp, Duration::from_secs(15)).await {
        Ok(p) => p,
        Err(e) => {
            return fail("upstream", e.to_string(), "contact the seller");
        }
    };
    let ceiling = cfg
        .apps
        .get(crate::config::DEFAULT_APP)
        .and_then(|a| a.max_per_call)
        .map_or(cfg.config.payment.max_per_call, |a| {
            a.min(cfg.config.payment.max_per_call)
        });
    let policy = select::Policy {
        networks: cfg.networks.clone(),
        ceiling,
        max_timeout_seconds: cfg.config.payment.max_timeout_seconds,
        pay_to: cfg.pay_to.clone(),
    };
    match select::choose_any(&pr, &policy, &cfg.svm_policy()) {
        Ok(c) => ok(
            "upstream",
            format!(
                "{uri} asks ${} on {}; x402d would pay it",
                c.amount(),
                c.caip2()
            ),
        ),
        Err(refusals) => fail(
            "upstream",
            format!(
                "x402d would refuse every offer: {}",
                refusals
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "adjust payment.networks / max_per_call, or the app's max_per_call",
        ),
    }
}

async fn unit_check() -> Check {
    let run = |args: &'static [&'static str]| async move {
        tokio::process::Command::new("systemctl")
            .args(args)
            .output()
            .await
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let user = run(&["--user", "is-enabled", "x402d.service"]).await;
    let system = run(&["is-enabled", "x402d.service"]).await;
    match (user.as_deref(), system.as_deref()) {
        (None, None) => skip("service", "systemctl not available"),
        (Some("enabled"), _) => ok("service", "user unit x402d.service is enabled"),
        (_, Some("enabled")) => ok("service", "system unit x402d.service is enabled"),
        _ => warn(
            "service",
            "x402d.service is not installed or not enabled",
            "x402d install-service --user   (then: systemctl --user enable --now x402d)",
        ),
    }
}
