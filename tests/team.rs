//! Team mode: several x402d daemons share one PostgreSQL ledger (a real,
//! throwaway server started by tests/team/pg.sh on loopback). Caps hold across
//! daemons, a killed daemon's signed payments become at-risk when it restarts,
//! an unreachable database fails paid calls closed, and `ledger migrate` copies
//! a ledger both ways exactly.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";

/// A throwaway PostgreSQL server; stopped (and its files removed) on drop.
struct Pg {
    dir: TempDir,
    port: u16,
}

fn script() -> String {
    format!("{}/tests/team/pg.sh", env!("CARGO_MANIFEST_DIR"))
}

impl Pg {
    /// `None` (with a loud message) when the PostgreSQL binaries are not
    /// installed here; in CI (`CI` set) their absence is a failure.
    fn start() -> Option<Pg> {
        Pg::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Option<Pg> {
        let have = Command::new(script())
            .arg("bin")
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install postgresql (.ci/run apt_install)"
            );
            eprintln!(
                "\n!!!!!! SKIPPED: team-mode tests need PostgreSQL (apt-get install postgresql) !!!!!!\n"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Pg {
            dir: TempDir::new("pg"),
            port,
        };
        pg.up_with(env);
        Some(pg)
    }

    fn up(&self) {
        self.up_with(&[])
    }

    fn up_with(&self, env: &[(&str, &str)]) {
        let out = Command::new(script())
            .envs(env.iter().copied())
            .args([
                "start",
                self.dir.0.to_str().unwrap(),
                &self.port.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn down(&self) {
        let _ = Command::new(script())
            .args(["stop", self.dir.0.to_str().unwrap()])
            .status();
    }

    fn sql(&self, q: &str) {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-Atc",
                q,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ledger(&self) -> String {
        format!(
            "[ledger]\nbackend = \"postgres\"\nurl = \"{}\"\n",
            self.url()
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.down();
    }
}

/// Counts a finished request when dropped (answered or not).
struct Finished(std::sync::Arc<std::sync::atomic::AtomicUsize>);
impl Drop for Finished {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn capped(daily: &str) -> String {
    format!(
        "{SEPOLIA}[apps.capped]\napi_key = \"sk-capped\"\nmax_per_call = \"0.01\"\ndaily = \"{daily}\"\n"
    )
}

/// `n` concurrent paid calls spread round-robin over `ds`; (status, code) each.
async fn burst(ds: &[&Daemon], n: usize) -> Vec<(u16, String)> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = ds[i % ds.len()].url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let r = request("POST", &url, &[("authorization", "Bearer sk-capped")], CHAT).await;
            let code = if r.status == 200 {
                String::new()
            } else {
                r.json()["error"]["code"].as_str().unwrap_or("").to_string()
            };
            (r.status, code)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn today(d: &Daemon) -> serde_json::Value {
    let out = d.cli(&["spend", "--app", "capped", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["window"] == "today")
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_share_a_daily_cap() {
    let Some(pg) = Pg::start() else { return };
    let seller = Seller::start(SellerCfg::default()).await;
    let cfg = format!("{}{}", capped("0.007"), pg.ledger())
        .replace("[payment]\n", "[payment]\nresolve_every_secs = 1\n");
    let ds: Vec<Daemon> = (0..3).map(|_| Daemon::start(&seller.url(), &cfg)).collect();
    let refs: Vec<&Daemon> = ds.iter().collect();
    let res = burst(&refs, 30).await;
    let ok = res.iter().filter(|r| r.0 == 200).count();
    let refused = res
        .iter()
        .filter(|r| r.0 == 402 && r.1 == "app_daily_cap_exceeded")
        .count();
    assert_eq!((ok, refused), (7, 23), "{res:?}");
    let c = seller.counts();
    assert_eq!(c.verified, 7, "exactly 7 paid at the seller");
    assert_eq!(c.payment_attempts, 7, "no signature for refused calls");
    // Every daemon sees the same shared ledger and totals.
    for d in &ds {
        let ps = d.payments();
        assert_eq!(ps.len(), 7);
        assert!(ps.iter().all(|p| p["state"] == "settled"), "{ps:?}");
        let t = today(d);
        assert_eq!(t["calls"], 7);
        assert_eq!(t["settled"], "0.007");
        assert_eq!(t["remaining"], "0");
    }
    let status = ds[1].cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        v["ledger"],
        pg.url(),
        "status shows the database (no password)"
    );
    let m = request("GET", &ds[2].url("/metrics"), &[], "").await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    // Each daemon paid only some of the 7, yet its /metrics shows the shared budget used up.
    assert!(
        text.lines()
            .any(|l| l.starts_with("x402d_cap_remaining_atomic_units")
                && l.contains("app=\"capped\"")
                && l.contains("window=\"today\"")
                && l.ends_with(" 0")),
        "/metrics shows the shared remaining budget:\n{text}"
    );
    // One daemon at a time resolves at-risk payments; another takes over when it dies.
    const LEADS: &str = "now resolves the team's at-risk payments";
    let leaders = || ds.iter().filter(|d| d.log().contains(LEADS)).count();
    assert!(wait_until(Duration::from_secs(10), || leaders() == 1));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(leaders(), 1, "exactly one resolver");
    let mut ds = ds;
    let first = ds.iter().position(|d| d.log().contains(LEADS)).unwrap();
    ds[first].kill9();
    assert!(
        wait_until(Duration::from_secs(15), || ds
            .iter()
            .enumerate()
            .any(|(i, d)| i != first && d.log().contains(LEADS))),
        "another daemon takes over the resolver"
    );
    // With every daemon stopped, the CLI reads the database directly.
    for d in &mut ds {
        d.kill9();
    }
    let t = today(&ds[0]);
    assert_eq!(t["calls"], 7);
    assert_eq!(ds[0].payments().len(), 7);
    let v = ds[0].cli(&["ledger", "verify"]);
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success() && out.contains("7 records"), "{out}");
    // A damaged total is found by verify and repaired by rebuild.
    pg.sql("UPDATE x402d_totals SET calls = 99 WHERE scope = '*' AND win = 't'");
    let v = ds[0].cli(&["ledger", "verify"]);
    assert!(
        !v.status.success(),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let r = ds[0].cli(&["ledger", "rebuild"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(ds[0].cli(&["ledger", "verify"]).status.success());
    assert_eq!(today(&ds[0])["calls"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_burst_leaves_at_risk_and_caps_hold() {
    let Some(pg) = Pg::start() else { return };
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 10_000,
        ..SellerCfg::default()
    })
    .await;
    let cfg = format!(
        "upstream_timeout_secs = 30\n{}{}",
        capped("0.007"),
        pg.ledger()
    );
    let mut d0 = Daemon::start(&seller.url(), &cfg);
    let d1 = Daemon::start(&seller.url(), &cfg);
    let d2 = Daemon::start(&seller.url(), &cfg);
    let urls: Vec<String> = [&d0, &d1, &d2]
        .iter()
        .map(|d| d.url("/v1/chat/completions"))
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..30 {
        // The first 4 go to d0 alone (it is killed with them in flight); the
        // rest spread over all three once those are on the wire.
        if i == 4 {
            assert!(wait_until(Duration::from_secs(20), || seller
                .counts()
                .payment_attempts
                >= 4));
        }
        let url = if i < 4 {
            urls[0].clone()
        } else {
            urls[i % 3].clone()
        };
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let _count = Finished(done);
            // A killed daemon drops its connections: no reply at all.
            tokio::time::timeout(
                Duration::from_secs(30),
                tokio::spawn(async move {
                    request("POST", &url, &[("authorization", "Bearer sk-capped")], CHAT).await
                }),
            )
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|r| r.status)
        }));
    }
    // Kill d0 once all 7 payments are signed and on the wire (the seller holds them).
    // (and the 23 refusals answered).
    assert!(wait_until(Duration::from_secs(20), || {
        seller.counts().payment_attempts >= 7
            && done.load(std::sync::atomic::Ordering::SeqCst) >= 23
    }));
    let mine: Vec<u64> = d1
        .payments()
        .iter()
        .filter(|p| p["state"] == "signed")
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(mine.len(), 7, "7 signed, shared");
    d0.kill9();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == Some(200)).count();
    let lost = statuses.iter().filter(|s| s.is_none()).count();
    assert_eq!(ok + lost, 7, "{statuses:?}");
    assert!(lost >= 4, "d0's paid calls were in flight: {statuses:?}");
    let d0 = d0.restart();
    assert!(
        d0.log().contains("recovered unfinished payments"),
        "{}",
        d0.log()
    );
    let ps = d2.payments();
    let at_risk = ps.iter().filter(|p| p["state"] == "at_risk").count();
    let settled = ps.iter().filter(|p| p["state"] == "settled").count();
    assert_eq!(
        at_risk, lost,
        "the killed daemon's in-flight payments are at risk: {ps:?}"
    );
    assert_eq!((settled, ps.len()), (ok, 7));
    // Totals are exact and the cap still holds on every daemon.
    let t = today(&d1);
    assert_eq!(t["calls"], 7);
    assert_eq!(t["remaining"], "0");
    // The stored totals match the records (checked through a running daemon).
    let v = d2.cli(&["ledger", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let again = burst(&[&d0, &d1, &d2], 3).await;
    assert!(
        again
            .iter()
            .all(|r| r.0 == 402 && r.1 == "app_daily_cap_exceeded"),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_down_fails_paid_calls_closed_and_recovers() {
    let Some(pg) = Pg::start() else { return };
    let seller = Seller::start(SellerCfg::default()).await;
    let cfg = format!("{}{}", capped("1"), pg.ledger());
    let d = Daemon::start(&seller.url(), &cfg);
    assert_eq!(chat(&d, "sk-capped").await.status, 200);
    let doc = d.cli(&["doctor"]);
    let text = String::from_utf8_lossy(&doc.stdout).to_string();
    assert!(text.contains("(1 payments, shared)"), "{text}");
    pg.down();
    let doc = d.cli(&["doctor"]);
    let text =
        String::from_utf8_lossy(&doc.stdout).to_string() + &String::from_utf8_lossy(&doc.stderr);
    assert!(text.contains("that PostgreSQL is up"), "{text}");
    let r = chat(&d, "sk-capped").await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "ledger_unavailable");
    assert_eq!(r.header("x-should-retry").as_deref(), Some("true"));
    assert_eq!(
        seller.counts().payment_attempts,
        1,
        "nothing signed while down"
    );
    // Unpaid calls still pass.
    let m = request("GET", &d.url("/v1/models"), &[], "").await;
    assert_eq!(m.status, 200);
    pg.up();
    let mut back = 0;
    for _ in 0..20 {
        if chat(&d, "sk-capped").await.status == 200 {
            back += 1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(back, 1, "paid calls resume once the database is back");
    assert_eq!(seller.counts().verified, 2);
    assert_eq!(today(&d)["calls"], 2);
}

/// Every record's stored bytes, by id, from an embedded ledger file.
fn raw_records(path: &std::path::Path) -> Vec<(u64, Vec<u8>)> {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const T: TableDefinition<u64, &[u8]> = TableDefinition::new("payments");
    let db = redb::Database::open(path).unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(T).unwrap();
    t.iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_redb_to_postgres_and_back_is_exact() {
    let Some(pg) = Pg::start() else { return };
    let seller = Seller::start(SellerCfg::default()).await;
    let mut d = Daemon::start(&seller.url(), &capped("0.003"));
    for _ in 0..2 {
        assert_eq!(chat(&d, "sk-capped").await.status, 200);
    }
    seller.set(|c| c.after_pay = AfterPay::Reject);
    assert_eq!(chat(&d, "sk-capped").await.status, 402);
    seller.set(|c| c.after_pay = AfterPay::Ok);
    let before_spend = today(&d);
    d.kill9();
    // Point the config at the database (backend stays redb for now).
    let mut text = std::fs::read_to_string(&d.config).unwrap();
    text.push_str(&format!("\n[ledger]\nurl = \"{}\"\n", pg.url()));
    std::fs::write(&d.config, &text).unwrap();
    let file = d.state_dir().join("ledger.redb");
    let original = raw_records(&file);
    assert_eq!(original.len(), 3);

    let out = d.cli(&["ledger", "migrate", "--to", "postgres"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied 3 payments"));
    // A non-empty target is refused unless told.
    let again = d.cli(&["ledger", "migrate", "--to", "postgres"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--replace"));

    // The database answers the reports the same way (backend = postgres, no daemon).
    let pg_text = text.replace("[ledger]\n", "[ledger]\nbackend = \"postgres\"\n");
    std::fs::write(&d.config, &pg_text).unwrap();
    assert_eq!(today(&d), before_spend);
    std::fs::write(&d.config, &text).unwrap();

    // And back into a fresh file: byte-exact records.
    std::fs::rename(&file, d.state_dir().join("ledger.redb.orig")).unwrap();
    let out = d.cli(&["ledger", "migrate", "--to", "redb"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(raw_records(&file), original);
    let refused = d.cli(&["ledger", "migrate", "--to", "redb"]);
    assert!(!refused.status.success(), "non-empty file refused");
    assert_eq!(today(&d), before_spend);
}

#[test]
fn config_check_never_shows_the_password() {
    let dir = TempDir::new("pgcfg");
    let cfg = dir.0.join("c.toml");
    std::fs::write(
        &cfg,
        "[ledger]\nbackend = \"postgres\"\nurl = \"postgres://team:s3cret-pw@db.internal:5432/x402d?sslmode=verify-full\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("s3cret"), "{all}");
    assert!(
        all.contains("postgres://team@db.internal:5432/x402d?sslmode=verify-full"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_from_env_credential_or_url_is_never_shown() {
    const PW: &str = "Pw-s3cret-42";
    let Some(pg) = Pg::start_with(&[("PG_PASSWORD", PW)]) else {
        return;
    };
    let seller = Seller::start(SellerCfg::default()).await;
    let cfg = format!("{}{}", capped("1"), pg.ledger());
    // $PGPASSWORD.
    let d1 = Daemon::start_env(&seller.url(), &cfg, &[("PGPASSWORD", PW)]);
    assert_eq!(chat(&d1, "sk-capped").await.status, 200);
    // A systemd credential.
    let creds = TempDir::new("creds");
    std::fs::write(creds.0.join("pgpassword"), format!("{PW}\n")).unwrap();
    let d2 = Daemon::start_env(
        &seller.url(),
        &cfg,
        &[("CREDENTIALS_DIRECTORY", creds.0.to_str().unwrap())],
    );
    assert_eq!(chat(&d2, "sk-capped").await.status, 200);
    // In the URL: `status` shows the URL without it.
    let with_pw = pg.url().replace("postgres@", &format!("postgres:{PW}@"));
    let d3 = Daemon::start(
        &seller.url(),
        &format!(
            "{}[ledger]\nbackend = \"postgres\"\nurl = \"{with_pw}\"\n",
            capped("1")
        ),
    );
    assert_eq!(chat(&d3, "sk-capped").await.status, 200);
    let st = d3.cli(&["status", "--json"]);
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(text.contains(&pg.url()) && !text.contains(PW), "{text}");
    let check = d3.cli(&["config", "check"]);
    assert!(!String::from_utf8_lossy(&check.stdout).contains(PW));
    for d in [&d1, &d2, &d3] {
        assert!(!d.log().contains(PW), "{}", d.log());
    }
    assert_eq!(today(&d1)["calls"], 3, "one shared ledger");
    // A wrong password: the daemon refuses to start, and says why without it.
    let dir = TempDir::new("badpw");
    let cfg = dir.0.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[ledger]\nbackend = \"postgres\"\nurl = \"{}\"\n",
            dir.0.join("state").display(),
            pg.url().replace("postgres@", "postgres:wrong-Pw-99@")
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong-Pw-99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_verify_full_with_a_private_ca() {
    if Command::new("openssl").arg("version").output().is_err() && std::env::var_os("CI").is_none()
    {
        eprintln!(
            "\n!!!!!! SKIPPED: the TLS test needs openssl (apt-get install openssl) !!!!!!\n"
        );
        return;
    }
    let Some(pg) = Pg::start_with(&[("PG_TLS", "1")]) else {
        return;
    };
    let seller = Seller::start(SellerCfg::default()).await;
    let ca = pg.dir.0.join("ca.pem");
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca.display()
    );
    let cfg = format!(
        "{}[ledger]\nbackend = \"postgres\"\nurl = \"{url}\"\n",
        capped("1")
    );
    let d = Daemon::start(&seller.url(), &cfg);
    assert_eq!(chat(&d, "sk-capped").await.status, 200);
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-Atc",
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'x402d'",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        text.ends_with("|t") && !text.starts_with("0|"),
        "x402d's connections use TLS: {text}"
    );
    // Without the private CA the server's certificate is refused: no start.
    let dir = TempDir::new("tlsbad");
    let c = dir.0.join("c.toml");
    std::fs::write(
        &c,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[ledger]\nbackend = \"postgres\"\nurl = \"{}?sslmode=require\"\n",
            dir.0.join("state").display(),
            pg.url()
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["--config", c.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
