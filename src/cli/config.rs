//! `config check` and `reload`.

use super::{Cli, Fail, load_config};
use hyper::Method;
use serde_json::Value;
use std::process::ExitCode;
use x402d::{admin, config};

pub(crate) fn check(cli: &Cli) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    match &cfg.file {
        Some(p) if p.exists() => outln!("# {} is valid", p.display()),
        _ => outln!("# no config file; built-in defaults"),
    }
    outln!("# state_dir = {:?}", cfg.state_dir.display().to_string());
    // Every network in preference order, with the RPC it uses (its own or the public one).
    let nets: Vec<String> = cfg
        .network_order
        .iter()
        .map(|id| {
            let name = x402d::x402::networks::v1_name_of(id).unwrap_or(id);
            let rpc = match x402d::x402::networks::lookup_svm(id) {
                Some(n) => cfg.svm_rpc_url(n),
                None => x402d::x402::networks::lookup(id).and_then(|n| cfg.rpc_url(n)),
            };
            format!(
                "{id} ({name}, rpc {})",
                rpc.as_deref().map_or("none", rpc_host)
            )
        })
        .collect();
    outln!("# pays on, most preferred first: {}", nets.join(", "));
    out!("{}", toml::to_string_pretty(&cfg.config)?);
    out!("{}", cfg.effective_caps_report());
    Ok(ExitCode::SUCCESS)
}

/// The scheme and host of an RPC URL (its path or query may carry an API key).
fn rpc_host(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find(['/', '?']) {
        Some(i) => &url[..after + i],
        None => url,
    }
}

pub(crate) async fn reload(cli: &Cli) -> Result<ExitCode, Fail> {
    let cfg = config::load(cli.config.as_deref()).map_err(|e| {
        Fail(
            1,
            format!("reload refused, the old config stays in force: {e}"),
        )
    })?;
    match admin::call(&cfg.state_dir, Method::POST, "/reload").await? {
        None => Err(Fail(
            3,
            "x402d is not running (no admin socket in the state dir)".into(),
        )),
        Some(v) => {
            let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
            if v.get("ok").and_then(Value::as_bool) == Some(true) {
                outln!("reloaded: {msg}");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(Fail(
                    1,
                    format!("reload refused, the old config stays in force: {msg}"),
                ))
            }
        }
    }
}
