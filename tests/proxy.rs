//! The real x402d binary against an in-process seller that verifies every
//! payment (recovers the signer, checks amount, payTo, asset/domain,
//! validBefore, nonce reuse) and counts calls.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";

#[tokio::test]
async fn paid_v2_call_end_to_end() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "sk-anything").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Body relayed byte for byte.
    assert_eq!(&r.body[..], COMPLETION.as_bytes());
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0.001"));
    assert!(
        r.header("payment-response").is_some(),
        "seller headers relayed"
    );
    let c = seller.counts();
    assert_eq!(
        (c.requests, c.unpaid, c.payment_attempts, c.verified),
        (2, 1, 1, 1),
        "{c:?}"
    );
    assert!(c.invalid.is_empty(), "{:?}", c.invalid);
    assert_eq!(
        c.saw_authorization, 0,
        "the app's API key must never reach the seller"
    );
    // Both legs carried the app's exact body.
    assert!(c.bodies.iter().all(|b| &b[..] == CHAT.as_bytes()));
    // The ledger has it, settled, with the transaction hash from PAYMENT-RESPONSE.
    let ps = d.payments();
    assert_eq!(ps.len(), 1);
    let p = &ps[0];
    assert_eq!(p["state"], "settled");
    assert_eq!(p["amount"], "0.001");
    assert_eq!(p["amount_atomic"], "1000");
    assert_eq!(p["app"], "default");
    assert_eq!(p["model"], "gpt-4o-mini");
    assert_eq!(p["network"], "eip155:84532");
    assert_eq!(p["payer"], PAYER);
    let nonce: alloy_primitives::B256 = p["nonce"].as_str().unwrap().parse().unwrap();
    assert_eq!(nonce, c.nonces[0]);
    assert_eq!(
        p["tx"].as_str().unwrap(),
        alloy_primitives::keccak256(nonce.as_slice()).to_string()
    );
}

#[tokio::test]
async fn paid_v1_call() {
    let seller = Seller::start(SellerCfg {
        version: 1,
        network: "base-sepolia".into(),
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(&r.body[..], COMPLETION.as_bytes());
    let c = seller.counts();
    assert_eq!((c.requests, c.verified), (2, 1), "{c:?}");
    assert_eq!(d.payments()[0]["state"], "settled");
}

#[tokio::test]
async fn over_ceiling_price_is_never_signed() {
    // $0.60 > default payment.max_per_call $0.50 (and > the default app's $0.05).
    let seller = Seller::start(SellerCfg {
        amount: "600000".into(),
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 402);
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    assert_eq!(
        r.header("x-x402d-error").as_deref(),
        Some("price_above_ceiling")
    );
    let e = r.json();
    assert_eq!(e["error"]["code"], "price_above_ceiling");
    assert_eq!(e["error"]["type"], "payment_error");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("$0.6") && msg.contains("ceiling $0.05"),
        "{msg}"
    );
    let c = seller.counts();
    assert_eq!(
        (c.requests, c.payment_attempts),
        (1, 0),
        "no signature may reach the seller"
    );
    assert!(d.payments().is_empty(), "nothing reserved");
}

#[tokio::test]
async fn no_acceptable_network_lists_offers_and_reasons() {
    let seller = Seller::start(SellerCfg {
        network: "eip155:8453".into(),
        asset: USDC_BASE.into(),
        extra: json!({"name": "USD Coin", "version": "2"}),
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 402);
    let e = r.json();
    assert_eq!(e["error"]["code"], "no_acceptable_payment_option");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("exact $0.001 on eip155:8453") && msg.contains("not in payment.networks"),
        "{msg}"
    );
    assert_eq!(seller.counts().payment_attempts, 0);
}

#[tokio::test]
async fn upstream_down_is_an_openai_shaped_502() {
    // Grab a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start(&format!("http://127.0.0.1:{port}"), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 502);
    let e = r.json();
    assert_eq!(e["error"]["code"], "upstream_unreachable");
    assert_eq!(e["error"]["type"], "upstream_error");
    assert!(e["error"]["param"].is_null());
    assert_eq!(
        r.header("x-x402d-error").as_deref(),
        Some("upstream_unreachable")
    );
    // Nothing was signed, so a retry is safe.
    assert_eq!(r.header("x-should-retry").as_deref(), Some("true"));
}

#[tokio::test]
async fn unpaid_routes_pass_through_at_no_cost() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = request("GET", &d.url("/v1/models"), &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0"));
    assert_eq!(r.json()["data"][0]["id"], "gpt-4o-mini");
    // A non-402 upstream error is relayed as is.
    seller.set(|c| c.unpaid_status = 429);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["message"], "upstream says no");
    assert!(r.header("x-x402d-error").is_none());
    assert_eq!(seller.counts().payment_attempts, 0);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_reach_nobody() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = request("GET", &d.url("/v1/embeddings"), &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = request("POST", &d.url("/v1/chat/completions"), &[], "{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_json");
    let big = vec![b' '; 8 * 1024 * 1024 + 1];
    let r = request("POST", &d.url("/v1/chat/completions"), &[], big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    // DNS rebinding: a request addressed to another name is refused.
    let r = request(
        "POST",
        &d.url("/v1/chat/completions"),
        &[("host", "evil.example:8402")],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 421);
    assert_eq!(r.json()["error"]["code"], "host_not_allowed");
    // Browsers (an Origin header) are refused unless allowed.
    let r = request(
        "POST",
        &d.url("/v1/chat/completions"),
        &[("origin", "https://evil.example")],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "origin_not_allowed");
    assert_eq!(seller.counts().requests, 0);
}

#[tokio::test]
async fn no_wallet_is_a_503_that_says_what_to_run() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start_with(&seller.url(), SEPOLIA, false);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    let e = r.json();
    assert_eq!(e["error"]["code"], "wallet_not_configured");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x402d wallet import")
    );
    assert_eq!(seller.counts().payment_attempts, 0);
    // Unpaid routes still work without a wallet.
    assert_eq!(
        request("GET", &d.url("/v1/models"), &[], "").await.status,
        200
    );
    // Importing a key takes effect without a restart.
    let mut p = x402d(&["--config", d.config.to_str().unwrap(), "wallet", "import"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin
        .take()
        .unwrap()
        .write_all(PAYER_KEY.as_bytes())
        .unwrap();
    assert!(p.wait().unwrap().success());
    assert_eq!(chat(&d, "k").await.status, 200);
}

#[tokio::test]
async fn seller_500_after_payment_is_at_risk_and_never_retried() {
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Fail500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 500, "upstream error relayed");
    assert_eq!(r.json()["error"]["message"], "model crashed");
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0.001"));
    assert_eq!(
        r.header("x-x402d-payment-state").as_deref(),
        Some("at_risk")
    );
    let p = &d.payments()[0];
    assert_eq!(p["state"], "at_risk");
    assert_eq!(seller.counts().verified, 1);
}

#[tokio::test]
async fn dropped_connection_after_payment_is_at_risk() {
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Drop,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    assert_eq!(r.json()["error"]["code"], "payment_outcome_unknown");
    assert_eq!(d.payments()[0]["state"], "at_risk");
}

#[tokio::test]
async fn seller_rejection_is_recorded_and_not_retried() {
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Reject,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 402);
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    let e = r.json();
    assert_eq!(e["error"]["code"], "payment_rejected");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("insufficient_funds")
    );
    let p = &d.payments()[0];
    assert_eq!(p["state"], "rejected");
    assert_eq!(seller.counts().payment_attempts, 1, "signed exactly once");
}

#[tokio::test]
async fn config_check_and_errors_name_the_key() {
    let dir = TempDir::new("cfg");
    let p = dir.0.join("c.toml");
    std::fs::write(&p, "[payment]\nmax_per_call = 0.5\n").unwrap();
    let out = x402d(&["--config", p.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("c.toml:2:") && err.contains("quoted decimal strings"),
        "{err}"
    );
    std::fs::write(&p, "[payment]\nmax_per_call = \"0.25\"\n").unwrap();
    let out = x402d(&["config", "check", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("max_per_call = \"0.25\"") && s.contains("listen = \"127.0.0.1:8402\""),
        "{s}"
    );
}

#[test]
fn wallet_commands_through_the_real_keyring() {
    let dir = TempDir::new("w");
    let p = dir.0.join("c.toml");
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    std::fs::write(
        &p,
        format!(
            "[wallet]\nkeyring_service = \"x402d-wt-{}\"\n",
            hex::encode(b)
        ),
    )
    .unwrap();
    let cfg = p.to_str().unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut a = vec!["--config", cfg];
        a.extend_from_slice(args);
        let mut c = x402d(&a)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut i = c.stdin.take().unwrap();
            if let Some(s) = stdin {
                i.write_all(s.as_bytes()).unwrap();
            }
        }
        let o = c.wait_with_output().unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, _, err) = run(&["wallet", "address"], None);
    assert_eq!(code, 1);
    assert!(err.contains("run `x402d wallet import`"), "{err}");
    let (code, out, err) = run(&["wallet", "import"], Some("not-a-key"));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not a 32-byte hex private key"));
    let (code, out, err) = run(&["wallet", "import"], Some(&format!("{PAYER_KEY}\n")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), PAYER);
    assert!(!err.contains(&PAYER_KEY[2..]) && !out.contains(&PAYER_KEY[2..]));
    // A second process (new session keyring) sees it.
    let (code, out, _) = run(&["wallet", "address"], None);
    assert_eq!((code, out.trim()), (0, PAYER));
    // `new` refuses to overwrite a key.
    let (code, _, err) = run(&["wallet", "new"], None);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run(&["wallet", "remove"], None);
    assert_eq!(code, 2);
    assert!(err.contains("--yes"));
    let (code, _, _) = run(&["wallet", "remove", "--yes"], None);
    assert_eq!(code, 0);
    let (code, _, _) = run(&["wallet", "address"], None);
    assert_eq!(code, 1);
    // `new` generates, stores and prints an address.
    let (code, out, _) = run(&["wallet", "new", "--no-backup"], None);
    assert_eq!(code, 0);
    let addr = out.trim().to_string();
    assert!(addr.starts_with("0x") && addr.len() == 42, "{addr}");
    let (_, out, _) = run(&["wallet", "address"], None);
    assert_eq!(out.trim(), addr);
    run(&["wallet", "remove", "--yes"], None);
}

/// A paid model list (the seller charges for `GET /v1/models`).
fn paid_models() -> SellerCfg {
    SellerCfg {
        free_models: false,
        ..Default::default()
    }
}

#[tokio::test]
async fn browser_subresource_loads_and_navigations_cannot_pay() {
    let seller = Seller::start(paid_models()).await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    for headers in [
        // <img src="http://127.0.0.1:8402/v1/models"> on any web page.
        &[("sec-fetch-dest", "image"), ("sec-fetch-mode", "no-cors")][..],
        &[("sec-fetch-mode", "no-cors")][..],
        &[
            ("sec-fetch-dest", "document"),
            ("sec-fetch-mode", "navigate"),
        ][..],
        &[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors")][..],
    ] {
        let r = request("GET", &d.url("/v1/models"), headers, "").await;
        assert_eq!(r.status, 403, "{headers:?}");
        assert_eq!(r.json()["error"]["code"], "browser_request_not_allowed");
        let r = request("POST", &d.url("/v1/chat/completions"), headers, CHAT).await;
        assert_eq!(r.status, 403, "{headers:?}");
    }
    let c = seller.counts();
    assert_eq!((c.payment_attempts, c.verified), (0, 0), "{c:?}");
    assert!(d.payments().is_empty());
    // The same call from a non-browser client pays as usual.
    assert_eq!(
        request("GET", &d.url("/v1/models"), &[], "").await.status,
        200
    );
    assert_eq!(seller.counts().verified, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_up_during_a_paid_model_list_still_records_the_payment() {
    use tokio::io::AsyncWriteExt;
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 1500,
        ..paid_models()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    s.write_all(format!("GET /v1/models HTTP/1.1\r\nhost: {}\r\n\r\n", d.addr).as_bytes())
        .await
        .unwrap();
    // The seller has the payment and is still working: the app hangs up.
    for _ in 0..400 {
        if seller.counts().verified == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seller.counts().verified, 1);
    drop(s);
    let settled = || d.payments().first().map(|p| p["state"].clone()) == Some(json!("settled"));
    assert!(
        wait_until(Duration::from_secs(20), settled),
        "payment left as {:?}",
        d.payments()
    );
}
