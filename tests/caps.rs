//! Per-app spend caps through the real server: exact under concurrency, durable
//! across SIGKILL and restart, visible through `x402d spend` / `payments`.

mod common;
use common::*;
use std::collections::HashSet;

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";

fn capped(daily: &str) -> String {
    format!(
        "{SEPOLIA}[apps.capped]\napi_key = \"sk-capped\"\nmax_per_call = \"0.01\"\ndaily = \"{daily}\"\n\
         [apps.picky]\napi_key = \"sk-picky\"\nmodels = [\"gpt-4o-mini\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_calls_pay_exactly_k() {
    const K: usize = 37;
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), &capped("0.037"));
    let url = d.url("/v1/chat/completions");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            request("POST", &url, &[("authorization", "Bearer sk-capped")], CHAT).await
        }));
    }
    let (mut ok, mut budget, mut other) = (0, 0, Vec::new());
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            402 if r.json()["error"]["type"] == "budget_exceeded" => {
                assert_eq!(r.json()["error"]["code"], "app_daily_cap_exceeded");
                assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
                budget += 1
            }
            s => other.push((s, String::from_utf8_lossy(&r.body).to_string())),
        }
    }
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((ok, budget), (K, 200 - K));
    let c = seller.counts();
    assert_eq!(c.verified, K, "{:?}", c.invalid);
    assert_eq!(c.payment_attempts, K, "no signature for refused calls");
    assert_eq!(c.verified_amount, K as u64 * 1000);
    let ps = d.payments();
    assert_eq!(ps.len(), K);
    assert!(
        ps.iter()
            .all(|p| p["state"] == "settled" && p["app"] == "capped")
    );
    let nonces: HashSet<_> = ps
        .iter()
        .map(|p| p["nonce"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nonces.len(), K, "nonces are unique");
    // `spend` shows the exact total and zero remaining.
    let out = d.cli(&["spend", "--app", "capped", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let today = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["window"] == "today")
        .unwrap();
    assert_eq!(today["calls"], K as u64);
    assert_eq!(today["settled"], "0.037");
    assert_eq!(today["cap"], "0.037");
    assert_eq!(today["remaining"], "0");
    let out = d.cli(&["ledger", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn model_allow_list_and_unknown_apps() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), &capped("1"));
    let body = "{\"model\":\"gpt-4o\",\"messages\":[]}";
    let r = request(
        "POST",
        &d.url("/v1/chat/completions"),
        &[("authorization", "Bearer sk-picky")],
        body,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");
    assert_eq!(r.json()["error"]["param"], "model");
    assert_eq!(seller.counts().requests, 0, "nothing forwarded");
    let r = chat(&d, "sk-picky").await;
    assert_eq!(r.status, 200);
    // An unknown key is charged to the default app ($0.05 per call, $1/day built in).
    let r = chat(&d, "sk-who").await;
    assert_eq!(r.status, 200);
    let apps: Vec<_> = d
        .payments()
        .iter()
        .map(|p| p["app"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(apps, vec!["default", "picky"]);

    let d2 = Daemon::start(
        &seller.url(),
        &format!("reject_unknown_apps = true\n{}", capped("1")),
    );
    let r = chat(&d2, "sk-who").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn wallet_wide_cap_spans_apps() {
    let seller = Seller::start(SellerCfg::default()).await;
    let cfg = format!("{}[limits]\ndaily = \"0.002\"\n", capped("1"));
    let d = Daemon::start(&seller.url(), &cfg);
    assert_eq!(chat(&d, "sk-capped").await.status, 200);
    assert_eq!(chat(&d, "sk-picky").await.status, 200);
    let r = chat(&d, "sk-capped").await;
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["error"]["code"], "wallet_daily_cap_exceeded");
    assert_eq!(seller.counts().verified, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_nothing_and_caps_hold_after_restart() {
    // Slow seller so that calls are in every state when the daemon dies.
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 30,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), &capped("0.060"));
    let url = d.url("/v1/chat/completions");
    let stream = tokio::spawn(async move {
        let mut handles = Vec::new();
        for i in 0..40 {
            let url = url.clone();
            handles.push(tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(i * 5)).await;
                let uri: hyper::Uri = url.parse().unwrap();
                // The daemon may die under us; connection errors are expected.
                tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    let s = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str())
                        .await
                        .ok()?;
                    let (mut tx, conn) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                            .await
                            .ok()?;
                    tokio::spawn(conn);
                    let req = hyper::Request::post(uri.path())
                        .header("host", uri.authority().unwrap().as_str())
                        .header("authorization", "Bearer sk-capped")
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            CHAT.as_bytes(),
                        )))
                        .unwrap();
                    tx.send_request(req).await.ok().map(|r| r.status().as_u16())
                })
                .await
                .ok()
                .flatten()
            }));
        }
        let mut statuses = Vec::new();
        for h in handles {
            statuses.push(h.await.unwrap());
        }
        statuses
    });
    // Kill once some payments have verified but others are still in flight.
    let counts = seller.counts.clone();
    assert!(wait_until(std::time::Duration::from_secs(10), || counts
        .lock()
        .unwrap()
        .verified
        >= 8));
    d.kill9();
    let _ = stream.await.unwrap();
    let accepted: HashSet<String> = seller
        .counts()
        .nonces
        .iter()
        .map(|n| n.to_string())
        .collect();

    let d = d.restart();
    // Calls were in flight when the daemon died, so startup recovery had work to do.
    assert!(
        d.log().contains("recovered unfinished payments"),
        "{}",
        d.log()
    );
    // The stored totals match the records after the crash and recovery.
    let out = d.cli(&["ledger", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ps = d.payments();
    // Every payment the seller accepted is in the ledger as settled or at-risk.
    for n in &accepted {
        let p = ps.iter().find(|p| p["nonce"].as_str() == Some(n.as_str()));
        let p = p.unwrap_or_else(|| panic!("accepted nonce {n} missing from the ledger"));
        assert!(p["state"] == "settled" || p["state"] == "at_risk", "{p}");
    }
    // Nothing is left half-done after recovery.
    assert!(
        ps.iter()
            .all(|p| p["state"] != "reserved" && p["state"] != "signed")
    );
    // Settled entries are exactly ones the seller accepted.
    for p in ps.iter().filter(|p| p["state"] == "settled") {
        assert!(accepted.contains(p["nonce"].as_str().unwrap()), "{p}");
    }
    // Caps still hold: keep calling until refused; counted spend never passes $0.060.
    let mut refused = false;
    for _ in 0..80 {
        let r = chat(&d, "sk-capped").await;
        if r.status == 402 {
            assert_eq!(r.json()["error"]["code"], "app_daily_cap_exceeded");
            refused = true;
            break;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert!(refused);
    let ps = d.payments();
    let total: u64 = ps
        .iter()
        .filter(|p| p["state"] != "released")
        .map(|p| p["amount_atomic"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(total <= 60_000, "counted {total} > cap");
    assert!(total > 60_000 - 1000, "budget left unused: {total}");
    // And the seller never got more than the cap.
    assert!(seller.counts().verified_amount <= 60_000);
    let out = d.cli(&["ledger", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn spend_and_payments_tables_for_humans() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), &capped("0.005"));
    for _ in 0..2 {
        assert_eq!(chat(&d, "sk-capped").await.status, 200);
    }
    let out = d.cli(&["spend", "--app", "capped"]);
    let s = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert!(
        lines[0].starts_with("APP     WINDOW  CALLS  SETTLED  AT-RISK  CAP    REMAINING"),
        "{s}"
    );
    assert!(
        lines[1].starts_with("capped  today   2      0.002    0        0.005  0.003"),
        "{s}"
    );
    let out = d.cli(&["payments"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.lines().next().unwrap().starts_with("ID  TIME"), "{s}");
    assert_eq!(s.lines().count(), 3);
    assert!(
        s.lines()
            .nth(1)
            .unwrap()
            .contains("capped  gpt-4o-mini  0.001   eip155:84532  settled  0x"),
        "{s}"
    );
    // Without a daemon, the same commands read the ledger file directly.
    drop(seller);
    let cfg = d.config.clone();
    let state = d.state_dir();
    let mut d = d;
    d.kill9();
    let _ = std::fs::remove_file(state.join("admin.sock"));
    let out = x402d(&["--config", cfg.to_str().unwrap(), "payments", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

/// An app table with only an `api_key` keeps the default app's caps: the built-in
/// $1/day stops it after 20 calls at $0.05 (the built-in per-call cap).
#[tokio::test]
async fn an_app_with_only_a_key_inherits_the_default_daily_cap() {
    let seller = Seller::start(SellerCfg {
        amount: "50000".into(),
        ..SellerCfg::default()
    })
    .await;
    let d = Daemon::start(
        &seller.url(),
        &format!("{SEPOLIA}[apps.bare]\napi_key = \"sk-bare\"\n"),
    );
    for i in 0..20 {
        let r = chat(&d, "sk-bare").await;
        assert_eq!(
            r.status,
            200,
            "call {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = chat(&d, "sk-bare").await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "app_daily_cap_exceeded");
    assert_eq!(
        seller.counts().payment_attempts,
        20,
        "nothing signed past the cap"
    );
    let ps = d.payments();
    assert_eq!(ps.len(), 20);
    assert!(ps.iter().all(|p| p["app"] == "bare"));
}
