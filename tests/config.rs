//! The config as the CLI sees it: what `x402d config check` refuses (and says to do),
//! the effective caps it prints, and where `state_dir = "~/…"` really lands.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};

fn check(dir: &TempDir, text: &str) -> Output {
    let p = dir.0.join("c.toml");
    std::fs::write(&p, text).unwrap();
    x402d(&["--config", p.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Each `#` comment line with its blanks squeezed, for column-independent matching.
fn comment_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let dir = TempDir::new("cfg-http");
    let out = check(&dir, "upstream = \"http://agent402.tools\"\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("c.toml:1: `upstream`: \"http://agent402.tools\" is plain http:// to agent402.tools, which is not a loopback host")
            && e.contains("payTo")
            && e.contains("Use https://")
            && e.contains("x402d config check"),
        "{e}"
    );
    assert!(out.stdout.is_empty());

    // The RPC that decides whether a signed payment was spent: same rule.
    let out = check(
        &dir,
        "[payment.rpc]\n\"eip155:84532\" = \"http://sepolia.base.org\"\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains(
            "c.toml:2: `payment.rpc.eip155:84532`: \"http://sepolia.base.org\" is plain http://"
        ) && e.contains("Use https://"),
        "{e}"
    );

    // Loopback sellers and nodes (local tests) stay allowed.
    let out = check(
        &dir,
        "upstream = \"http://localhost:4021\"\n[payment.rpc]\n\"eip155:84532\" = \"http://127.0.0.1:8545\"\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn config_check_prints_every_apps_effective_caps() {
    let dir = TempDir::new("cfg-caps");
    let out = check(
        &dir,
        "[apps.bare]\napi_key = \"sk-bare\"\n[apps.open]\napi_key = \"sk-open\"\ndaily = \"unlimited\"\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = comment_lines(&out);
    for want in [
        "# app max_per_call daily monthly total",
        "# default 0.05 (built-in) 1 (built-in) 10 (built-in) unlimited (built-in)",
        "# bare 0.05 (inherited) 1 (inherited) 10 (inherited) unlimited (inherited)",
        "# open 0.05 (inherited) unlimited 10 (inherited) unlimited (inherited)",
        "# Wallet-wide, across all apps: max_per_call 0.5 (payment.max_per_call), daily unlimited, monthly unlimited ([limits]).",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want:?} in {lines:#?}");
    }
    // The whole output is still TOML (the report is comments), with "unlimited" as written.
    let text = String::from_utf8_lossy(&out.stdout);
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["apps"]["open"]["daily"].as_str(), Some("unlimited"));
}

/// Starts `x402d serve` in `cwd` with `$HOME` = `home`; returns once it is ready.
fn serve_in(cwd: &Path, home: &Path, config: &Path) -> std::process::Child {
    let mut child = x402d(&["--config", config.to_str().unwrap(), "serve"])
        .current_dir(cwd)
        .env("HOME", home)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        log.push_str(&line);
        log.push('\n');
        if line.contains("x402d ready") {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("x402d did not become ready:\n{log}");
}

#[test]
fn tilde_state_dir_is_home_whatever_the_working_directory() {
    let home = TempDir::new("cfg-home");
    let cwd = TempDir::new("cfg-cwd");
    let config = home.0.join("c.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\nstate_dir = \"~/x402d-state\"\n\
         [wallet]\nkeyring_service = \"x402d-test-unused\"\n",
    )
    .unwrap();
    let out = x402d(&["--config", config.to_str().unwrap(), "config", "check"])
        .current_dir(&cwd.0)
        .env("HOME", &home.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let want = format!(
        "# state_dir = {:?}",
        home.0.join("x402d-state").display().to_string()
    );
    assert!(comment_lines(&out).contains(&want), "{want}");

    // The daemon puts its ledger there, not in `./~/…` of wherever it was started.
    let mut child = serve_in(&cwd.0, &home.0, &config);
    let ledger = home.0.join("x402d-state/ledger.redb");
    let stray = cwd.0.join("~");
    let _ = child.kill();
    let _ = child.wait();
    assert!(ledger.exists(), "{}", ledger.display());
    assert!(!stray.exists(), "{} was created", stray.display());

    // A relative path is refused, naming the key.
    std::fs::write(&config, "state_dir = \"x402d-state\"\n").unwrap();
    let out = x402d(&["--config", config.to_str().unwrap(), "config", "check"])
        .current_dir(&cwd.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("`state_dir`: \"x402d-state\" is a relative path") && e.contains("~/"),
        "{e}"
    );
}

#[tokio::test]
async fn reload_refuses_plain_http_to_a_remote_host() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), "[payment]\nnetworks = [\"eip155:84532\"]\n");
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        text.replace(&seller.url(), "http://seller.example:4021"),
    )
    .unwrap();
    let out = d.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("reload refused") && e.contains("is plain http:// to seller.example"),
        "{e}"
    );
    // SIGHUP: the daemon refuses it too and keeps the old upstream.
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_until(std::time::Duration::from_secs(10), || d
            .log()
            .contains("config reload refused")),
        "{}",
        d.log()
    );
    assert!(d.log().contains("is plain http:// to seller.example"));
    assert_eq!(
        chat(&d, "sk-any").await.status,
        200,
        "the old upstream stays"
    );
}

#[test]
fn a_relative_xdg_state_home_is_ignored() {
    let home = TempDir::new("cfg-xdg");
    let config = home.0.join("c.toml");
    std::fs::write(&config, "").unwrap();
    let out = x402d(&["--config", config.to_str().unwrap(), "config", "check"])
        .env_remove("STATE_DIRECTORY")
        .env("XDG_STATE_HOME", "relative/state")
        .env("HOME", &home.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let want = format!(
        "# state_dir = {:?}",
        home.0.join(".local/state/x402d").display().to_string()
    );
    assert!(comment_lines(&out).contains(&want), "{want}");
}
