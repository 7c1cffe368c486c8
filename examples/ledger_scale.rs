//! Figures for the ledger at scale (printed, never asserted):
//! `cargo run --release --example ledger_scale [PAYMENTS]` (default 1,000,000).
//!
//! Generates the ledger through the `Ledger` API the way paid calls fill it (a
//! reservation carrying the authorization, then the outcome recorded detached),
//! then measures, against a fresh ledger: `Ledger::open` (start-up), records
//! decoded at start-up, `totals()` and a `/metrics` render; the one-time rebuild
//! of a file without the persisted index; and bytes written to disk per paid call
//! (`/proc/self/io` write_bytes) with durable commits per call, for the current
//! flow and the former three-commit one.

use jiff::tz::TimeZone;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use x402d::ledger::{Auth, Caps, Ledger, Outcome, Reserve};
use x402d::money::Usd;

const DAY_MS: i64 = 86_400_000;

fn req(i: u64, now: i64, auth: bool) -> Reserve {
    Reserve {
        now_ms: now - (i as i64 % 90) * DAY_MS,
        app: ["a", "b", "c", "d"][(i % 4) as usize].into(),
        model: Some("gpt-4o-mini".into()),
        route: "/v1/chat/completions".into(),
        network: "eip155:84532".into(),
        asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
        pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
        amount: Usd(1000),
        caps: Caps {
            app_daily: Some(Usd(1_000_000_000)),
            wallet_daily: Some(Usd(1_000_000_000)),
            ..Caps::default()
        },
        auth: auth.then(|| Auth {
            payer: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            nonce: format!("0x{:064x}", i + 1),
            valid_before: 4_000_000_000,
            payment_identifier: Some(format!("x402d_{i:032x}")),
        }),
    }
}

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("x402d-scale-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Drops the ledger and waits for its file lock (the writer thread exits).
fn close(l: Ledger, path: &Path) {
    drop(l);
    for _ in 0..1000 {
        if let Ok(db) = redb::Database::create(path) {
            drop(db);
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("ledger stayed locked");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Start-up and report latency on the ledger at `path`.
async fn measure(label: &str, path: &Path, now: i64) {
    let mut opens = Vec::new();
    let mut decoded = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (l, _) = Ledger::open(path, TimeZone::UTC, now).unwrap();
        opens.push(ms(t.elapsed()));
        decoded = l.stats().records_decoded;
        close(l, path);
    }
    let (l, _) = Ledger::open(path, TimeZone::UTC, now).unwrap();
    let mut t0 = Vec::new();
    let mut t30 = Vec::new();
    let mut render = Vec::new();
    let apps = std::collections::BTreeMap::new();
    let tz = TimeZone::UTC;
    let metrics = x402d::metrics::Metrics::new();
    let mut records = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let s = l.totals(now, 0).await.unwrap();
        t0.push(ms(t.elapsed()));
        records = s.records;
        let t = Instant::now();
        let s30 = l.totals(now, 30).await.unwrap();
        t30.push(ms(t.elapsed()));
        let t = Instant::now();
        let limits = x402d::ledger::report::Limits {
            apps: &apps,
            wallet_daily: None,
            wallet_monthly: None,
            tz: &tz,
            now_ms: now,
        };
        let s = l.totals(now, 0).await.unwrap();
        metrics.set_ledger_stats(&l.stats());
        let text = metrics.render(&s, &limits);
        render.push(ms(t.elapsed()));
        assert!(!text.is_empty() && s30.wallet.days.len() == 30);
    }
    println!(
        "{label}: {records} records | Ledger::open min/median/max {:.2}/{:.2}/{:.2} ms, {decoded} records decoded | totals(days=0) median {:.3} ms | totals(days=30) median {:.3} ms | /metrics (totals + render) median {:.3} ms",
        opens.iter().copied().fold(f64::MAX, f64::min),
        median(opens.clone()),
        opens.iter().copied().fold(0.0, f64::max),
        median(t0),
        median(t30),
        median(render),
    );
    close(l, path);
}

/// Bytes written and commits per paid call, `n` sequential calls.
async fn per_call(label: &str, path: &Path, now: i64, n: u64, start: u64, one_commit: bool) {
    let (l, _) = Ledger::open(path, TimeZone::UTC, now).unwrap();
    // Warm: the first commits create tables.
    for i in 0..10 {
        let id = l.reserve(req(start + i, now, true)).await.unwrap().unwrap();
        l.finish(id, Outcome::Settled { tx: None }, now)
            .await
            .unwrap();
    }
    let s0 = l.stats();
    let w0 = write_bytes();
    let t = Instant::now();
    for i in 0..n {
        let i = start + 10 + i;
        if one_commit {
            let id = l.reserve(req(i, now, true)).await.unwrap().unwrap();
            l.finish_detached(
                id,
                Outcome::Settled {
                    tx: Some(format!("0x{i:064x}")),
                },
                now,
            );
        } else {
            let id = l.reserve(req(i, now, false)).await.unwrap().unwrap();
            l.signed_with_identifier(
                id,
                "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
                format!("0x{:064x}", i + 1),
                4_000_000_000,
                Some(format!("x402d_{i:032x}")),
                now,
            )
            .await
            .unwrap();
            l.finish(
                id,
                Outcome::Settled {
                    tx: Some(format!("0x{i:064x}")),
                },
                now,
            )
            .await
            .unwrap();
        }
    }
    l.flush().await.unwrap();
    let took = t.elapsed();
    let w = write_bytes() - w0;
    let s = l.stats();
    println!(
        "{label}: {n} sequential paid calls | {:.0} bytes written per call | durable commits per call {:.2} (+{:.2} without fsync, {} flushes) | {:.1} µs per call",
        w as f64 / n as f64,
        (s.durable_commits - s0.durable_commits) as f64 / n as f64,
        (s.non_durable_commits - s0.non_durable_commits) as f64 / n as f64,
        s.flushes - s0.flushes,
        took.as_secs_f64() * 1e6 / n as f64,
    );
    close(l, path);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let now = jiff::Timestamp::now().as_millisecond();

    let fresh = fresh_dir("fresh").join("ledger.redb");
    close(Ledger::open(&fresh, TimeZone::UTC, now).unwrap().0, &fresh);
    measure("fresh ledger", &fresh, now).await;
    per_call(
        "bytes, fresh ledger, one durable commit",
        &fresh,
        now,
        2000,
        0,
        true,
    )
    .await;
    let fresh3 = fresh_dir("fresh3").join("ledger.redb");
    per_call(
        "bytes, fresh ledger, former three commits",
        &fresh3,
        now,
        2000,
        0,
        false,
    )
    .await;

    let big = fresh_dir("big").join("ledger.redb");
    let t = Instant::now();
    {
        let (l, _) = Ledger::open(&big, TimeZone::UTC, now).unwrap();
        let workers = 256;
        let mut tasks = Vec::new();
        for w in 0..workers {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while i < n {
                    let id = l.reserve(req(i, now, true)).await.unwrap().unwrap();
                    let outcome = if i % 10_000 == 0 {
                        Outcome::AtRisk {
                            reason: "reset".into(),
                        }
                    } else {
                        Outcome::Settled {
                            tx: Some(format!("0x{i:064x}")),
                        }
                    };
                    l.finish_detached(id, outcome, now);
                    i += workers;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        l.flush().await.unwrap();
        close(l, &big);
    }
    let size = std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {n} payments through Ledger::reserve + finish_detached in {:.1} s ({} MB file)",
        t.elapsed().as_secs_f64(),
        size / 1_000_000
    );
    measure(&format!("{n}-payment ledger"), &big, now).await;
    per_call(
        &format!("bytes, {n}-payment ledger, one durable commit"),
        &big,
        now,
        2000,
        n,
        true,
    )
    .await;

    // The former start-up: every record decoded (a file without the persisted
    // index is rebuilt once, then persists it).
    {
        let db = redb::Database::create(&big).unwrap();
        let wtx = db.begin_write().unwrap();
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("index");
        wtx.delete_table(def).unwrap();
        wtx.commit().unwrap();
    }
    let t = Instant::now();
    let (l, _) = Ledger::open(&big, TimeZone::UTC, now).unwrap();
    println!(
        "one-time rebuild of a file without the index (every record decoded, as every start did before): Ledger::open {:.0} ms, {} records decoded",
        ms(t.elapsed()),
        l.stats().records_decoded
    );
    let t = Instant::now();
    let v = l.verify().await.unwrap();
    println!(
        "ledger verify: {} records, {} differences, {:.0} ms",
        v.records,
        v.differences.len(),
        ms(t.elapsed())
    );
    close(l, &big);
    for d in [&fresh, &fresh3, &big] {
        if let Some(p) = d.parent() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}
