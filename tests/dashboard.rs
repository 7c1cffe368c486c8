//! The dashboard in a real browser: headless Chromium loads `GET /` from the real
//! binary after paid calls by two apps and the rendered DOM shows both apps,
//! their spend and the chart; a screenshot is kept as a test artifact. Plus the
//! page's and the API's security rules over plain HTTP.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APPS: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n[limits]\ndaily = \"0.05\"\n\
                    [apps.alpha]\napi_key = \"sk-alpha\"\ndaily = \"0.004\"\nmonthly = \"0.10\"\n\
                    [apps.beta]\napi_key = \"sk-beta\"\ndaily = \"0.010\"\n";

/// Debian's `chromium`, or `X402D_CHROMIUM`. Missing: the test fails under CI
/// (`CI=true`) and is skipped, loudly, elsewhere.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("X402D_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "chromium is missing (apt-get install chromium); the dashboard test cannot be skipped in CI"
        );
        eprintln!("SKIP: no chromium (apt-get install chromium, or set X402D_CHROMIUM)");
    }
    found
}

/// Runs headless Chromium with a fresh profile and no background traffic; kills
/// it if it has not finished in 120 s.
fn run_chromium(bin: &Path, profile: &Path, args: &[String]) -> std::process::Output {
    let child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let id = child.id();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
        }
    });
    let out = child.wait_with_output().expect("chromium output");
    let _ = tx.send(());
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "chromium hung: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Where the screenshot is kept: `target/dashboard-test/dashboard.png`.
fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("dashboard-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_spend_of_two_apps() {
    let Some(browser) = chromium() else { return };
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), APPS);
    // $0.001 a call: alpha spends $0.003 (75 % of its daily cap), beta $0.002.
    for key in ["sk-alpha", "sk-beta", "sk-alpha", "sk-beta", "sk-alpha"] {
        assert_eq!(chat(&d, key).await.status, 200);
    }
    let url = d.url("/");
    let profile = TempDir::new("chromium");

    let out = run_chromium(
        &browser,
        &profile.0,
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
    );
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let ctx = || {
        format!(
            "DOM:\n{dom}\nchromium stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(out.status.success(), "{}", ctx());
    assert!(dom.contains("data-loaded=\"true\""), "{}", ctx());
    // Both apps, with today's spend against their caps.
    for (app, text) in [
        ("alpha", "$0.003 of $0.004 (75%)"),
        ("beta", "$0.002 of $0.01 (20%)"),
    ] {
        let card = dom
            .split(&format!("<div class=\"app\" data-app=\"{app}\">"))
            .nth(1)
            .unwrap_or_else(|| panic!("no card for {app}: {}", ctx()));
        let card = card.split("<div class=\"app\"").next().unwrap();
        assert!(card.contains(text), "{app}: {text} in {card}");
    }
    // The wallet-wide card: $0.005 of the $0.05 daily limit.
    assert!(dom.contains("$0.005 of $0.05 (10%)"), "{}", ctx());
    // The chart: one stacked bar today, one segment per app, drawn by the page.
    let today = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    for (app, amount) in [("alpha", "$0.003"), ("beta", "$0.002")] {
        let seg = format!("data-app=\"{app}\" data-day=\"{today}\" data-amount=\"{amount}\"");
        assert!(dom.contains(&seg), "chart segment {seg}: {}", ctx());
    }
    assert_eq!(dom.matches("<rect class=\"seg\"").count(), 2, "{}", ctx());
    // The latest payments, with explorer links for the settled transactions.
    let latest = dom.split("id=\"latest\"").nth(1).unwrap();
    assert_eq!(latest.matches("<tr data-id=").count(), 5, "{}", ctx());
    assert_eq!(
        latest
            .matches("href=\"https://sepolia.basescan.org/tx/0x")
            .count(),
        5
    );
    assert!(latest.contains("gpt-4o-mini") && latest.contains("base-sepolia"));
    assert!(dom.contains("Nothing at risk."), "{}", ctx());

    // A screenshot, kept as an artifact.
    let png = artifact_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let out = run_chromium(
        &browser,
        &profile.0,
        &[
            "--virtual-time-budget=5000".into(),
            "--window-size=1280,1500".into(),
            format!("--screenshot={}", png.display()),
            url,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000);
    eprintln!("dashboard screenshot: {}", png.display());
}

#[tokio::test]
async fn page_and_api_are_same_origin_and_read_only() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(
        &seller.url(),
        &format!("allowed_origins = [\"http://localhost:3000\"]\n{APPS}"),
    );
    let host = d.addr.to_string();
    let own = format!("http://{host}");

    let page = request("GET", &d.url("/"), &[], "").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    assert!(page.header("access-control-allow-origin").is_none());
    for asset in ["/dashboard.js", "/dashboard.css"] {
        assert_eq!(request("GET", &d.url(asset), &[], "").await.status, 200);
    }

    for path in ["/api/spend", "/api/payments"] {
        // curl, or the page's own fetch: answered.
        let r = request("GET", &d.url(path), &[], "").await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        r.json();
        let r = request(
            "GET",
            &d.url(path),
            &[("origin", &own), ("sec-fetch-site", "same-origin")],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
        // Another site, even one allowed to call the proxy: refused, no CORS grant.
        for (k, v) in [
            ("origin", "http://localhost:3000"),
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let r = request("GET", &d.url(path), &[(k, v)], "").await;
            assert_eq!(r.status, 403, "{path} {k}: {v}");
            assert!(r.header("access-control-allow-origin").is_none());
        }
        // DNS rebinding: a foreign Host is refused.
        let r = request("GET", &d.url(path), &[("host", "evil.example")], "").await;
        assert_eq!(r.status, 421, "{path}");
        // Read-only: nothing but GET.
        let r = request("POST", &d.url(path), &[], "{}").await;
        assert_eq!(r.status, 404, "{path}");
    }
    let r = request("GET", &d.url("/"), &[("host", "evil.example:1")], "").await;
    assert_eq!(r.status, 421);
}

/// Writes 30 days of settled spend (and two at-risk payments) for three apps
/// into a stopped daemon's ledger, for the README screenshot.
async fn seed_history(ledger_path: &Path) {
    use x402d::ledger::{Caps, Ledger, Outcome, Reserve};
    use x402d::money::Usd;
    let now = x402d::now_ms();
    let (ledger, _) =
        Ledger::open(ledger_path, jiff::tz::TimeZone::UTC, now).expect("open the ledger");
    let day = 86_400_000i64;
    let mut n = 0u64;
    for back in (0..30i64).rev() {
        for (app, base, model) in [
            ("cursor", 310_000u64, "anthropic/claude-sonnet-4"),
            ("aider", 120_000, "gpt-4o"),
            ("research-agent", 60_000, "gpt-4o-mini"),
        ] {
            // A deterministic wobble per day and app; weekends are quieter.
            let w = (back as u64 * 7 + app.len() as u64 * 13) % 11;
            let weekend = (back % 7 == 2 || back % 7 == 3) as u64;
            let mut total = base * (6 + w) / 10 / (1 + weekend);
            if back == 0 && app == "cursor" {
                total = 1_560_000; // a busy day: past the 80 % alert
            }
            let calls = 1 + w % 4;
            for c in 0..calls {
                n += 1;
                let at = now - back * day - (c as i64 + 1) * 600_000;
                let id = ledger
                    .reserve(Reserve {
                        now_ms: at,
                        app: app.into(),
                        model: Some(model.into()),
                        route: "/v1/chat/completions".into(),
                        network: "eip155:8453".into(),
                        asset: USDC_BASE.into(),
                        pay_to: PAY_TO.into(),
                        amount: Usd(total / calls),
                        caps: Caps::default(),
                        auth: None,
                    })
                    .await
                    .unwrap()
                    .unwrap();
                ledger
                    .signed(id, PAYER.into(), format!("0x{n:064x}"), 0, at)
                    .await
                    .unwrap();
                let outcome = if back == 0 && c == 0 && app != "aider" {
                    Outcome::AtRisk {
                        reason: "timed out after sending".into(),
                    }
                } else {
                    Outcome::Settled {
                        tx: Some(alloy_primitives::keccak256(n.to_be_bytes()).to_string()),
                    }
                };
                ledger.finish(id, outcome, at).await.unwrap();
            }
        }
    }
    drop(ledger);
    // The writer thread lets go of the file when it sees the handle is gone.
    assert!(wait_until(Duration::from_secs(10), || {
        x402d::ledger::open_offline(ledger_path).is_ok()
    }));
}

/// Regenerates `docs/dashboard.png` (the README's screenshot): 30 days of
/// history, then real paid calls by two apps. Not part of the suite:
/// `cargo test --test dashboard -- --ignored readme_screenshot`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn readme_screenshot() {
    let browser = chromium().expect("chromium");
    let seller = Seller::start(SellerCfg {
        amount: "20000".into(),
        ..SellerCfg::default()
    })
    .await;
    let cfg = "[payment]\nnetworks = [\"eip155:84532\", \"eip155:8453\"]\n[limits]\ndaily = \"5.00\"\nmonthly = \"60.00\"\n\
               [apps.cursor]\napi_key = \"sk-cursor\"\ndaily = \"2.00\"\nmonthly = \"40.00\"\n\
               [apps.aider]\napi_key = \"sk-aider\"\ndaily = \"1.00\"\n\
               [apps.research-agent]\napi_key = \"sk-agent\"\ndaily = \"0.50\"\ntotal = \"10.00\"\n";
    let mut d = Daemon::start(&seller.url(), cfg);
    d.kill9();
    seed_history(&d.state_dir().join("ledger.redb")).await;
    let d = d.restart();
    for key in [
        "sk-cursor",
        "sk-agent",
        "sk-cursor",
        "sk-agent",
        "sk-cursor",
    ] {
        assert_eq!(chat(&d, key).await.status, 200);
    }
    let profile = TempDir::new("chromium");
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let out = run_chromium(
        &browser,
        &profile.0,
        &[
            "--virtual-time-budget=5000".into(),
            "--window-size=1240,1640".into(),
            format!("--screenshot={}", png.display()),
            d.url("/"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("wrote {}", png.display());
}
