//! The ledger through the real binary: one fsync per paid call, a SIGKILL
//! between the answer and its durable outcome, and `x402d ledger verify`.

mod common;
use common::*;

const CAPPED: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n\
    [apps.capped]\napi_key = \"sk-capped\"\nmax_per_call = \"0.01\"\ndaily = \"0.003\"\n";

/// A counter of `/metrics`, by its full sample name with labels.
async fn metric(d: &Daemon, sample: &str) -> u64 {
    let r = request("GET", &d.url("/metrics"), &[], "").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
}

fn verify_ok(d: &Daemon) -> String {
    let out = d.cli(&["ledger", "verify"]);
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{s}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

/// Each paid call waits for exactly one durable commit (its reservation, which
/// carries the authorization's parameters); its outcome commits without one.
/// Counted from `/metrics`, not timed.
#[tokio::test]
async fn a_paid_call_makes_one_durable_commit() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), CAPPED);
    let durable = "x402d_ledger_commits_total{durable=\"true\"}";
    let lazy = "x402d_ledger_commits_total{durable=\"false\"}";
    // The first scrape creates the labels (nothing committed yet).
    let (d0, n0) = (metric(&d, durable).await, metric(&d, lazy).await);
    for _ in 0..3 {
        let r = chat(&d, "sk-capped").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-x402d-payment-state").as_deref(),
            Some("settled")
        );
    }
    assert_eq!(metric(&d, durable).await - d0, 3, "one per paid call");
    // The outcomes commit without an fsync; one that joins the next call's
    // reservation in the same batch rides on that commit instead.
    let lazy_commits = metric(&d, lazy).await - n0;
    assert!(
        lazy_commits <= 3,
        "the outcomes, without an fsync: {lazy_commits}"
    );
    // A refused call (over the cap) commits nothing.
    assert_eq!(chat(&d, "sk-capped").await.status, 402);
    assert_eq!(metric(&d, durable).await - d0, 3);
    assert_eq!(seller.counts().verified, 3);
    verify_ok(&d);
}

/// SIGKILL after the app got its paid answer but before the outcome was made
/// durable (the idle flush is pushed out of reach): the payment comes back at
/// risk (resolved on chain later), never released or lost; an outcome that a
/// later reservation made durable comes back settled; the caps still hold.
#[tokio::test]
async fn sigkill_after_the_answer_before_the_outcome_is_durable() {
    let seller = Seller::start(SellerCfg::default()).await;
    let mut d = Daemon::start_env(
        &seller.url(),
        CAPPED,
        &[("RUST_LOG", "info"), ("X402D_LEDGER_FLUSH_MS", "3600000")],
    );
    // Call 1's outcome is made durable by call 2's reservation; call 2's is not.
    for _ in 0..2 {
        let r = chat(&d, "sk-capped").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.header("x-x402d-payment-state").as_deref(),
            Some("settled")
        );
    }
    // The daemon itself saw both settled.
    let ps = d.payments();
    assert!(ps.iter().all(|p| p["state"] == "settled"), "{ps:?}");
    d.kill9();
    let _ = std::fs::remove_file(d.state_dir().join("admin.sock"));
    // On disk: call 2 is still signed-for (its nonce durable, its outcome not).
    let out = d.cli(&["payments", "--json"]);
    let on_disk: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = on_disk
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["signed", "settled"]);
    // The totals on disk agree with the records on disk.
    verify_ok(&d);

    let d = d.restart();
    assert!(
        d.log().contains("recovered unfinished payments"),
        "{}",
        d.log()
    );
    let ps = d.payments();
    let accepted: Vec<String> = seller
        .counts()
        .nonces
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(accepted.len(), 2);
    let state_of = |nonce: &str| {
        ps.iter()
            .find(|p| p["nonce"] == nonce)
            .unwrap_or_else(|| panic!("accepted nonce {nonce} missing: {ps:?}"))["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state_of(&accepted[0]), "settled");
    assert_eq!(
        state_of(&accepted[1]),
        "at_risk",
        "fail closed, never released"
    );
    // Both still count: $0.002 of $0.003, so one more call fits, then the cap holds.
    assert_eq!(chat(&d, "sk-capped").await.status, 200);
    let r = chat(&d, "sk-capped").await;
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["error"]["code"], "app_daily_cap_exceeded");
    assert_eq!(seller.counts().verified, 3);
    let out = d.cli(&["spend", "--app", "capped", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let today = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["window"] == "today")
        .unwrap()
        .clone();
    assert_eq!(
        (today["calls"].as_u64(), today["remaining"].as_str()),
        (Some(3), Some("0"))
    );
    verify_ok(&d);
}

/// `ledger verify` without a daemon reads the file; a stored total that differs
/// from the records fails it with what to do, and `ledger rebuild` fixes it.
/// `spend` without a daemon reads the stored totals.
#[tokio::test]
async fn ledger_verify_offline_finds_a_bad_total_and_rebuild_fixes_it() {
    let seller = Seller::start(SellerCfg::default()).await;
    let mut d = Daemon::start(&seller.url(), CAPPED);
    for _ in 0..2 {
        assert_eq!(chat(&d, "sk-capped").await.status, 200);
    }
    assert!(verify_ok(&d).contains("ledger ok: 2 records"));
    d.kill9();
    let _ = std::fs::remove_file(d.state_dir().join("admin.sock"));
    assert!(verify_ok(&d).contains("ledger ok: 2 records"));
    // Tamper with the wallet-wide lifetime total.
    {
        let db = redb::Database::create(d.state_dir().join("ledger.redb")).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("index");
            let mut t = wtx.open_table(def).unwrap();
            let v: Vec<u8> = [2u64, 9_000, 0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            t.insert(b"t*".as_slice(), v.as_slice()).unwrap();
        }
        wtx.commit().unwrap();
    }
    // `spend` shows what is stored (no record read).
    let out = d.cli(&["spend", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["app"] == "(wallet)" && r["window"] == "total")
        .unwrap()
        .clone();
    assert_eq!(total["settled"], "0.009");
    let out = d.cli(&["ledger", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("differs: the wallet in total: stored 2 calls, 9000 settled"),
        "{stdout}"
    );
    assert!(stderr.contains("run `x402d ledger rebuild`"), "{stderr}");
    let out = d.cli(&["ledger", "rebuild"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(verify_ok(&d).contains("ledger ok: 2 records"));
    // And the daemon starts from the rebuilt totals.
    let d = d.restart();
    let out = d.cli(&["ledger", "verify", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["records"], 2);
    assert_eq!(v["differences"], serde_json::json!([]));
}

/// A stopped daemon leaves its ledger file closed: redb repairs a file that was
/// not (a walk of the whole file: seconds at a million payments), so every
/// restart after a clean stop would pay for it. Checked with redb's own repair
/// callback on the file the daemon left.
#[tokio::test]
async fn sigterm_leaves_the_ledger_file_closed() {
    let seller = Seller::start(SellerCfg::default()).await;
    let mut d = Daemon::start(&seller.url(), CAPPED);
    let r = chat(&d, "sk-capped").await;
    assert_eq!(r.status, 200);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status();
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = repaired.clone();
    let db = redb::Database::builder()
        .set_repair_callback(move |_| seen.store(true, std::sync::atomic::Ordering::SeqCst))
        .create(d.state_dir().join("ledger.redb"))
        .unwrap();
    drop(db);
    assert!(
        !repaired.load(std::sync::atomic::Ordering::SeqCst),
        "the daemon exited without closing its ledger file"
    );
}
