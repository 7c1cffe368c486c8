//! Benchmark 2a: the local cost of a paid call.
//!
//! An instant in-process x402 v2 seller that VERIFIES every payment (recovered
//! signer = `from`, payTo, amount, validAfter/validBefore window, unused nonce;
//! the checks of tests/common/mod.rs) answers 402 then 200. x402d (release
//! binary, durable redb ledger, default `info` logging to a pipe) pays each call:
//! unpaid attempt → 402 → reserve (commit) → sign → signed (commit) → paid
//! attempt → settled (commit). Load: N workers, one keep-alive connection each,
//! back to back, for BENCH_SECS after a 0.5 s warm-up.
//!
//! Reports paid calls/s, latency percentiles, and x402d's CPU time per paid call
//! from /proc/<pid>/stat (utime+stime delta / calls). The seller and the load
//! generator share the same 2 cores, so throughput is a whole-system figure.
//!
//! `cargo bench --bench paid` (env: BENCH_RUNS, BENCH_SECS, BENCH_CONC="1,16,64",
//! BENCH_RUST_LOG to override the daemon's log filter, X402D_BIN).

mod support;

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::*;
use tokio::time::Instant;

const CMD: &str = "cargo bench --bench paid";

struct Load {
    ok: u64,
    errors: u64,
    lat: Vec<f64>,
    elapsed: f64,
    cpu: f64,
    sys: f64,
    me: f64,
    others: f64,
    per: PerCall,
}

/// Runs `conc` workers for `warm` + `secs`; only the measured window counts.
async fn load(d: &Daemon, conc: usize, body: Bytes, warm: f64, secs: f64) -> Load {
    let addr = d.addr;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (body, measuring, stop) = (body.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await;
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            let mut first_error = None;
            while !stop.load(Ordering::Relaxed) {
                let m = measuring.load(Ordering::Relaxed);
                let (us, r) = timed(c.call("POST", "/v1/chat/completions", body.clone())).await;
                if !m || stop.load(Ordering::Relaxed) {
                    continue;
                }
                let settled = r
                    .headers
                    .get("x-x402d-payment-state")
                    .is_some_and(|v| v == "settled");
                if r.status == 200 && settled {
                    ok += 1;
                    lat.push(us);
                } else {
                    errors += 1;
                    if first_error.is_none() {
                        first_error = Some(format!(
                            "{} {}",
                            r.status,
                            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
                        ));
                    }
                }
            }
            (ok, errors, lat, first_error)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(warm)).await;
    // With BENCH_CALLGRIND, profile only the measured window.
    let counters = CallCounters::start(d.pid(), d.addr).await;
    callgrind_control("-z", d.pid());
    let busy = Busy::start(Some(d.pid()));
    let cpu0 = cpu_split(d.pid());
    let me0 = cpu_secs(std::process::id());
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_split(d.pid());
    let me1 = cpu_secs(std::process::id());
    let others = busy.others_pct();
    callgrind_control("-d", d.pid());
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ok: u64 = results.iter().map(|r| r.0).sum();
    let per = counters.per_call(d.pid(), d.addr, ok).await;
    let mut out = Load {
        ok: 0,
        errors: 0,
        lat: Vec::new(),
        elapsed,
        cpu: (cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1),
        sys: cpu1.1 - cpu0.1,
        me: me1 - me0,
        others,
        per,
    };
    for (ok, errors, lat, first_error) in results {
        out.ok += ok;
        out.errors += errors;
        out.lat.extend(lat);
        if let Some(e) = first_error {
            println!("    first error: {e}");
        }
    }
    out
}

fn concurrencies() -> Vec<usize> {
    std::env::var("BENCH_CONC")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 64])
}

fn main() {
    header(
        "paid-call local cost (instant verifying seller, durable redb ledger)",
        CMD,
    );
    let rt = runtime();
    rt.block_on(async {
        let seller = Seller::start(1000).await;
        let d = Daemon::start(&seller.url(), BENCH_APP, true);
        println!(
            "seller {} ($0.001, v2, verifies each payment); x402d pid {} on {}; RSS after start {} kB",
            seller.addr,
            d.pid(),
            d.addr,
            d.rss_kb()
        );
        let body = chat_body(2048);
        // Sanity: one paid call, fully verified.
        let mut c = Conn::open(d.addr).await;
        let r = c.call("POST", "/v1/chat/completions", body.clone()).await;
        assert_eq!(
            r.status,
            200,
            "paid call failed: {}\n{}",
            String::from_utf8_lossy(&r.body),
            d.log_tail()
        );
        drop(c);
        let mut figs = Figures::default();
        let secs = secs();
        let lines0 = d.log_lines.load(Ordering::Relaxed);
        let verified0 = seller.verified.load(Ordering::Relaxed);
        let mut total_ok = 0;
        for run in 0..runs() {
            for &conc in &concurrencies() {
                let l = load(&d, conc, body.clone(), 0.5, secs).await;
                let lat = sorted(l.lat);
                let rate = l.ok as f64 / l.elapsed;
                let cpu_us = l.cpu * 1e6 / l.ok.max(1) as f64;
                let sys_us = l.sys * 1e6 / l.ok.max(1) as f64;
                let me_us = l.me * 1e6 / l.ok.max(1) as f64;
                total_ok += l.ok;
                let p = &l.per;
                println!(
                    "run {run} c={conc}: per paid call: {:.1} context switches, {:.0} bytes written to disk, {:.2} durable commits; x402d's own time p50 {:.0} µs, p99 {:.0} µs",
                    p.ctx_switches, p.bytes_written, p.commits, p.own_p50_us, p.own_p99_us
                );
                println!(
                    "run {run} c={conc}: {} paid in {:.2} s = {rate:.0}/s, {} errors; x402d CPU {:.3} s = {cpu_us:.0} µs/call (of which kernel {sys_us:.0}; {:.0}% of one core); bench process (load + verifying seller) {me_us:.0} µs/call; other processes {:.0}% of the machine\n    latency {}",
                    l.ok,
                    l.elapsed,
                    l.errors,
                    l.cpu,
                    100.0 * l.cpu / l.elapsed,
                    l.others,
                    lat_line(&lat)
                );
                let k = format!("c={conc}");
                figs.push(&format!("{k} paid calls/s"), "1/s", rate);
                figs.push(&format!("{k} latency p50"), "µs", pct(&lat, 50.0));
                figs.push(&format!("{k} latency p95"), "µs", pct(&lat, 95.0));
                figs.push(&format!("{k} latency p99"), "µs", pct(&lat, 99.0));
                figs.push(&format!("{k} x402d CPU per paid call"), "µs", cpu_us);
                figs.push(&format!("{k} x402d kernel CPU per paid call"), "µs", sys_us);
                figs.push(&format!("{k} bench-process CPU per paid call"), "µs", me_us);
                figs.push(&format!("{k} errors"), "", l.errors as f64);
                figs.push(&format!("{k} other processes"), "% CPU", l.others);
                figs.push(&format!("{k} context switches per paid call"), "", p.ctx_switches);
                figs.push(&format!("{k} bytes written per paid call"), "B", p.bytes_written);
                figs.push(&format!("{k} durable commits per paid call"), "", p.commits);
                figs.push(&format!("{k} own time p50"), "µs", p.own_p50_us);
                figs.push(&format!("{k} own time p99"), "µs", p.own_p99_us);
            }
        }
        let verified = seller.verified.load(Ordering::Relaxed) - verified0;
        let lines = d.log_lines.load(Ordering::Relaxed) - lines0;
        println!(
            "\nseller verified {verified} payments, {} invalid (last: {:?}); x402d wrote {lines} log lines ({:.1} per counted call); RSS now {} kB",
            seller.invalid.load(Ordering::Relaxed),
            seller.last_invalid.lock().unwrap().clone(),
            lines as f64 / total_ok.max(1) as f64,
            d.rss_kb()
        );
        println!("summary over {} runs:", runs());
        figs.print();
        for &conc in &concurrencies() {
            let k = format!("c={conc}");
            let rate = figs.get(&format!("{k} paid calls/s"));
            let g = |n: &str| figs.get(&format!("{k} latency {n}")).med;
            let cpu = figs.get(&format!("{k} x402d CPU per paid call"));
            result(
                &format!("paid calls/s, instant verifying seller, {k}"),
                if conc == 64 { "≥ 5,000/s" } else { "—" },
                &format!(
                    "{}; other processes used {:.0}% of the CPUs",
                    rate.show(0, "/s"),
                    figs.get(&format!("{k} other processes")).med
                ),
                CMD,
            );
            result(
                &format!("paid-call latency, {k} (p50 / p95 / p99)"),
                "—",
                &format!("{:.0} / {:.0} / {:.0} µs", g("p50"), g("p95"), g("p99")),
                CMD,
            );
            result(
                &format!("x402d CPU per paid call, {k}"),
                "—",
                &format!(
                    "{} (kernel {:.0}); load generator + verifying seller {:.0} µs/call",
                    cpu.show(0, "µs"),
                    figs.get(&format!("{k} x402d kernel CPU per paid call")).med,
                    figs.get(&format!("{k} bench-process CPU per paid call")).med
                ),
                CMD,
            );
            let m = |n: &str| figs.get(&format!("{k} {n}")).med;
            result(
                &format!("instant seller, {k}: x402d's own time per paid call, excluding upstream waits (p50 / p99; x402d_paid_call_overhead_seconds)"),
                "≤ 350 / ≤ 1,000 µs",
                &format!("{:.0} / {:.0} µs", m("own time p50"), m("own time p99")),
                CMD,
            );
            result(
                &format!("instant seller, {k}: per paid call: durable commits / bytes written to disk / context switches"),
                "1 / ≤ 8 KB / —",
                &format!(
                    "{:.2} commits / {:.1} KB / {:.1} switches",
                    m("durable commits per paid call"),
                    m("bytes written per paid call") / 1000.0,
                    m("context switches per paid call")
                ),
                CMD,
            );
        }
        drop(d);
    });
}
