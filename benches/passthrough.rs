//! Benchmark 1: pass-through overhead of x402d on unpriced calls.
//!
//! An instant loopback mock (hyper, 200 at once) is called directly and through
//! x402d (`upstream` = the mock), interleaved: every worker holds one keep-alive
//! connection to each and alternates direct/proxied requests (the order flips
//! every iteration), so both series see the same machine load. The overhead is
//! the difference of MATCHED percentiles of the two series
//! (pXX(proxied) − pXX(direct)); the median of the per-iteration paired
//! differences is printed as a cross-check.
//!
//! `cargo bench --bench passthrough` (env: BENCH_RUNS, BENCH_SECS).

mod support;

use bytes::Bytes;
use support::*;
use tokio::time::Instant;

const CMD: &str = "cargo bench --bench passthrough";

struct Series {
    direct: Vec<f64>,
    proxied: Vec<f64>,
    paired: Vec<f64>,
    errors: u64,
}

async fn phase(
    direct: std::net::SocketAddr,
    proxied: std::net::SocketAddr,
    conc: usize,
    method: &'static str,
    path: &'static str,
    body: Bytes,
    secs: f64,
) -> Series {
    let deadline = Instant::now() + std::time::Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut d = Conn::open(direct).await;
            let mut p = Conn::open(proxied).await;
            // One untimed warm-up each (connection set-up, upstream pool fill).
            d.call(method, path, body.clone()).await;
            p.call(method, path, body.clone()).await;
            let mut s = Series {
                direct: Vec::new(),
                proxied: Vec::new(),
                paired: Vec::new(),
                errors: 0,
            };
            let mut i = w;
            while Instant::now() < deadline {
                let direct_first = i % 2 == 0;
                i += 1;
                let (a, b);
                if direct_first {
                    a = timed(d.call(method, path, body.clone())).await;
                    b = timed(p.call(method, path, body.clone())).await;
                } else {
                    b = timed(p.call(method, path, body.clone())).await;
                    a = timed(d.call(method, path, body.clone())).await;
                }
                if a.1.status != 200 || b.1.status != 200 {
                    s.errors += 1;
                    continue;
                }
                s.direct.push(a.0);
                s.proxied.push(b.0);
                s.paired.push(b.0 - a.0);
            }
            s
        }));
    }
    let mut all = Series {
        direct: Vec::new(),
        proxied: Vec::new(),
        paired: Vec::new(),
        errors: 0,
    };
    for t in tasks {
        let s = t.await.unwrap();
        all.direct.extend(s.direct);
        all.proxied.extend(s.proxied);
        all.paired.extend(s.paired);
        all.errors += s.errors;
    }
    all
}

fn main() {
    header(
        "pass-through overhead (instant mock, direct vs through x402d)",
        CMD,
    );
    let rt = runtime();
    rt.block_on(async {
        let (mock, model_hits) = instant_mock().await;
        let d = Daemon::start(&format!("http://{mock}"), BENCH_APP, false);
        println!(
            "mock {mock}; x402d pid {} on {}; load generator: hyper http1 keep-alive, 1 conn per worker per target",
            d.pid(),
            d.addr
        );
        let chat = chat_body(2048);
        let cases: [(&str, &'static str, &'static str, Bytes); 2] = [
            ("GET /v1/models", "GET", "/v1/models", Bytes::new()),
            (
                "POST 2KB chat",
                "POST",
                "/v1/chat/completions",
                chat.clone(),
            ),
        ];
        let mut figs = Figures::default();
        let secs = secs();
        for run in 0..runs() {
            for conc in [1usize, 16] {
                for (name, method, path, body) in &cases {
                    let busy = Busy::start(Some(d.pid()));
                    let cpu0 = d.cpu_secs();
                    let hits0 = model_hits.load(std::sync::atomic::Ordering::Relaxed);
                    callgrind_control("-z", d.pid());
                    let s = phase(mock, d.addr, conc, method, path, body.clone(), secs).await;
                    let cpu = d.cpu_secs() - cpu0;
                    callgrind_control("-d", d.pid());
                    let others = busy.others_pct();
                    let hits = model_hits.load(std::sync::atomic::Ordering::Relaxed) - hits0;
                    let dir = sorted(s.direct);
                    let pro = sorted(s.proxied);
                    let pair = sorted(s.paired);
                    let key = format!("c={conc} {name}");
                    let cpu_us = cpu * 1e6 / pro.len().max(1) as f64;
                    println!(
                        "run {run} {key}: {} pairs, {} errors; x402d CPU {cpu_us:.0} µs per proxied request; other processes {others:.0}% of the machine\n    direct  {}\n    proxied {}",
                        dir.len(),
                        s.errors,
                        lat_line(&dir),
                        lat_line(&pro)
                    );
                    if *method == "GET" {
                        // Direct calls hit the mock once each; the rest came through x402d.
                        let forwarded = hits.saturating_sub(dir.len() as u64 + conc as u64);
                        println!(
                            "    GET /v1/models forwarded by x402d to the upstream: {forwarded} of {} proxied",
                            pro.len()
                        );
                        figs.push(&format!("{key} forwarded"), "", forwarded as f64);
                    }
                    figs.push(&format!("{key} x402d CPU per request"), "µs", cpu_us);
                    figs.push(&format!("{key} other processes"), "% CPU", others);
                    for p in [50.0, 95.0, 99.0] {
                        figs.push(
                            &format!("{key} overhead p{p}"),
                            "µs",
                            pct(&pro, p) - pct(&dir, p),
                        );
                    }
                    figs.push(&format!("{key} paired-diff median"), "µs", pct(&pair, 50.0));
                    figs.push(&format!("{key} direct p50"), "µs", pct(&dir, 50.0));
                    figs.push(&format!("{key} proxied p50"), "µs", pct(&pro, 50.0));
                    figs.push(
                        &format!("{key} proxied req/s"),
                        "req/s",
                        pro.len() as f64 / secs,
                    );
                }
            }
        }
        println!("\nsummary over {} runs (overhead = pXX(proxied) − pXX(direct)):", runs());
        figs.print();
        for conc in [1usize, 16] {
            for (name, ..) in &cases {
                let key = format!("c={conc} {name}");
                let g = |p: &str| figs.get(&format!("{key} overhead {p}"));
                let (p50, p95, p99) = (g("p50"), g("p95"), g("p99"));
                let note = if name.starts_with("GET")
                    && figs.get(&format!("{key} forwarded")).max < 1.0
                {
                    " [answered from x402d's cached catalog, not forwarded]"
                } else {
                    ""
                };
                result(
                    &format!("pass-through overhead, {key} (p50 / p95 / p99){note}"),
                    "—",
                    &format!(
                        "{:+.0} / {:+.0} / {:+.0} µs (p50 range {:.0}..{:.0}; n={}); x402d CPU {:.0} µs/req; other processes {:.0}% of the CPUs",
                        p50.med,
                        p95.med,
                        p99.med,
                        p50.min,
                        p50.max,
                        p50.n,
                        figs.get(&format!("{key} x402d CPU per request")).med,
                        figs.get(&format!("{key} other processes")).med
                    ),
                    CMD,
                );
            }
        }
        drop(d);
    });
}
