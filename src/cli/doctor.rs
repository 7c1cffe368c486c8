//! `doctor`.

use super::{Cli, Fail};
use hyper::Method;
use std::process::ExitCode;
use x402d::{admin, config};

pub(crate) async fn doctor_cmd(cli: &Cli) -> Result<ExitCode, Fail> {
    use x402d::doctor::Level;
    let cfg = match config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            outln!("FAIL config: {e}");
            outln!("     fix: edit the file; `x402d config check` shows the effective config");
            return Ok(ExitCode::from(1));
        }
    };
    let running = matches!(
        admin::call(&cfg.state_dir, Method::GET, "/status").await,
        Ok(Some(_))
    );
    let checks = x402d::doctor::run(&cfg, running).await;
    let mut failed = false;
    outln!(
        "{:<4} {:<10} daemon {}",
        "",
        "",
        if running { "running" } else { "not running" }
    );
    for c in &checks {
        let tag = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => {
                failed = true;
                "FAIL"
            }
            Level::Skip => "skip",
        };
        outln!("{tag} {:<10} {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            outln!("     {:<10} fix: {fix}", "");
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
