//! Benchmark 2b: the ledger's cost per transition, using `x402d::ledger::Ledger`
//! directly (the real writer thread, group commit, durable redb commits).
//!
//! One payment = 3 transitions: reserve (cap check + insert) → signed → finish
//! (settled). Sequential: one payment at a time, so every transition waits for
//! its own commit (fsync). Concurrent: 64 tasks on a 2-worker tokio runtime, so
//! the writer batches whatever is waiting into one transaction. A raw
//! `write + fdatasync` loop on the same file system is printed for context.
//!
//! `cargo bench --bench ledger` (env: BENCH_RUNS, BENCH_SECS).

mod support;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::time::Instant;
use x402d::ledger::{Caps, Ledger, Outcome, Reserve};
use x402d::money::Usd;

const CMD: &str = "cargo bench --bench ledger";

fn reserve() -> Reserve {
    Reserve {
        now_ms: x402d::now_ms(),
        app: "bench".into(),
        model: Some("gpt-4o-mini".into()),
        route: "/v1/chat/completions".into(),
        network: "eip155:84532".into(),
        asset: USDC_BASE_SEPOLIA.into(),
        pay_to: PAY_TO.into(),
        amount: Usd(1000),
        caps: Caps {
            app_per_call: Some(Usd(50_000)),
            app_daily: Some(Usd(1_000_000_000_000)),
            app_monthly: Some(Usd(10_000_000_000_000)),
            app_total: None,
            wallet_daily: None,
            wallet_monthly: None,
        },
        auth: None,
    }
}

/// One payment through all three transitions; returns the µs each took.
async fn payment(l: &Ledger) -> [f64; 3] {
    let (a, id) = timed(l.reserve(reserve())).await;
    let id = id.unwrap().unwrap();
    let (b, r) = timed(l.signed(
        id,
        PAYER.into(),
        "0x1111111111111111111111111111111111111111111111111111111111111111".into(),
        1_900_000_000,
        x402d::now_ms(),
    ))
    .await;
    r.unwrap();
    let (c, r) = timed(l.finish(
        id,
        Outcome::Settled {
            tx: Some("0x2222222222222222222222222222222222222222222222222222222222222222".into()),
        },
        x402d::now_ms(),
    ))
    .await;
    r.unwrap();
    [a, b, c]
}

/// Opens the ledger, waiting for a previous handle's writer thread to let go;
/// returns the ledger and the ms the successful open took.
fn open_timed(path: &std::path::Path) -> (Ledger, f64) {
    let t = std::time::Instant::now();
    loop {
        let t1 = std::time::Instant::now();
        match Ledger::open(path, jiff::tz::TimeZone::UTC, x402d::now_ms()) {
            Ok((l, _)) => return (l, t1.elapsed().as_secs_f64() * 1e3),
            Err(x402d::ledger::LedgerError::Locked(_)) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("open: {e}"),
        }
    }
}

fn fsync_baseline(dir: &std::path::Path, n: usize) -> f64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join("fsync.bin"))
        .unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        f.write_all(&[7u8; 512]).unwrap();
        f.sync_data().unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    header(
        "ledger cost per transition (x402d::ledger::Ledger, durable commits)",
        CMD,
    );
    let rt = runtime();
    let secs = secs();
    let mut figs = Figures::default();
    for run in 0..runs() {
        let dir = TempDir::new("ledger");
        let fs = fsync_baseline(&dir.0, 200);
        figs.push("raw write+fdatasync", "µs", fs);
        let (ledger, _) = Ledger::open(
            &dir.0.join("ledger.redb"),
            jiff::tz::TimeZone::UTC,
            x402d::now_ms(),
        )
        .unwrap();
        rt.block_on(async {
            // Sequential.
            let t0 = Instant::now();
            let mut per = [Vec::new(), Vec::new(), Vec::new()];
            while t0.elapsed().as_secs_f64() < secs {
                let t = payment(&ledger).await;
                for i in 0..3 {
                    per[i].push(t[i]);
                }
            }
            let el = t0.elapsed().as_secs_f64();
            let n = per[0].len();
            let ops = 3 * n;
            let us = el * 1e6 / ops as f64;
            let [r, s, f] = per.map(sorted);
            println!(
                "run {run} sequential: {n} payments = {ops} transitions in {el:.2} s: {us:.0} µs/op, {:.0} ops/s; p50 reserve {:.0} / signed {:.0} / finish {:.0} µs; raw fdatasync {fs:.0} µs",
                ops as f64 / el,
                pct(&r, 50.0),
                pct(&s, 50.0),
                pct(&f, 50.0)
            );
            figs.push("sequential µs per transition", "µs", us);
            figs.push("sequential transitions/s", "ops/s", ops as f64 / el);
            figs.push("sequential reserve p50", "µs", pct(&r, 50.0));
            figs.push("sequential signed p50", "µs", pct(&s, 50.0));
            figs.push("sequential finish p50", "µs", pct(&f, 50.0));

            // 64 concurrent payments.
            let ledger = Arc::new(ledger.clone());
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let l = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t = payment(&l).await;
                        lat.extend(t);
                        n += 1;
                    }
                    (n, lat)
                }));
            }
            let (mut n, mut lat) = (0u64, Vec::new());
            for t in tasks {
                let (k, l) = t.await.unwrap();
                n += k;
                lat.extend(l);
            }
            let el = t0.elapsed().as_secs_f64();
            let ops = 3 * n;
            let lat = sorted(lat);
            println!(
                "run {run} 64 concurrent: {n} payments = {ops} transitions in {el:.2} s: {:.1} µs/op (wall / ops), {:.0} ops/s, {:.0} payments/s; per-transition latency p50 {:.0} µs, p99 {:.0} µs",
                el * 1e6 / ops as f64,
                ops as f64 / el,
                n as f64 / el,
                pct(&lat, 50.0),
                pct(&lat, 99.0)
            );
            figs.push("64-concurrent µs per transition (wall/ops)", "µs", el * 1e6 / ops as f64);
            figs.push("64-concurrent transitions/s", "ops/s", ops as f64 / el);
            figs.push("64-concurrent payments/s", "1/s", n as f64 / el);
            figs.push("64-concurrent transition latency p50", "µs", pct(&lat, 50.0));
        });
        drop(ledger);
        // Let the writer thread see the closed channel and release the file.
        std::thread::sleep(Duration::from_millis(50));
    }
    // Whole-ledger scans as the ledger grows: `unresolved()` (the at-risk resolver runs
    // it every 30 s) and `Ledger::open` (recovery + index rebuild at every start).
    let dir = TempDir::new("ledger-scan");
    let path = dir.0.join("ledger.redb");
    let mut have = 0u64;
    for target in [10_000u64, 50_000] {
        let (ledger, _) = open_timed(&path);
        let ledger = Arc::new(ledger);
        rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..64u64 {
                let l = ledger.clone();
                let n = (target - have) / 64 + u64::from(w < (target - have) % 64);
                tasks.push(tokio::spawn(async move {
                    for _ in 0..n {
                        payment(&l).await;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        have = target;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let open = rt.block_on(ledger.unresolved()).unwrap();
            let ms = t.elapsed().as_secs_f64() * 1e3;
            assert!(open.is_empty());
            figs.push(&format!("unresolved() scan, {target} payments"), "ms", ms);
        }
        drop(ledger);
        for _ in 0..3 {
            let (l, ms) = open_timed(&path);
            figs.push(&format!("Ledger::open, {target} payments"), "ms", ms);
            drop(l);
        }
        println!(
            "ledger with {target} payments: unresolved() {:.1} ms, Ledger::open {:.1} ms (medians of 3)",
            figs.get(&format!("unresolved() scan, {target} payments"))
                .med,
            figs.get(&format!("Ledger::open, {target} payments")).med
        );
    }

    println!("\nsummary over {} runs:", runs());
    figs.print();
    let g = |n: &str| figs.get(n);
    result(
        "ledger, sequential: µs per transition (ops/s)",
        "—",
        &format!(
            "{} ({:.0} ops/s)",
            g("sequential µs per transition").show(0, "µs"),
            g("sequential transitions/s").med
        ),
        CMD,
    );
    result(
        "ledger, 64 concurrent: µs per transition (ops/s)",
        "—",
        &format!(
            "{} ({:.0} ops/s = {:.0} payments/s)",
            g("64-concurrent µs per transition (wall/ops)").show(1, "µs"),
            g("64-concurrent transitions/s").med,
            g("64-concurrent payments/s").med
        ),
        CMD,
    );
    for n in [10_000, 50_000] {
        result(
            &format!(
                "ledger with {n} payments: full scan by unresolved() (every 30 s) / Ledger::open at start"
            ),
            "—",
            &format!(
                "{:.1} ms / {:.1} ms (medians of 3)",
                g(&format!("unresolved() scan, {n} payments")).med,
                g(&format!("Ledger::open, {n} payments")).med
            ),
            CMD,
        );
    }
    result(
        "raw write+fdatasync on the bench file system (context)",
        "—",
        &g("raw write+fdatasync").show(0, "µs"),
        CMD,
    );
}
