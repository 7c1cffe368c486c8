//! Benchmark 4: what a long history costs. Ledgers of 0 (fresh), 20,000 and
//! 1,000,000 settled payments, spread over the last 400 days, are generated
//! THROUGH THE LEDGER API (`x402d::ledger::Ledger::open` + reserve / signed /
//! finish in big concurrent batches: the real writer thread and group commit,
//! not the network), then for each size the release binary is started on a copy:
//!
//! - start-up: exec → first HTTP response (direct exec, no wallet in the keyring,
//!   so the keyring does not add its own variance);
//! - `GET /metrics` latency on a keep-alive connection (first request, then the
//!   median and max of the next `BENCH_SCRAPES`, default 20).
//!
//! The generated ledgers are cached under `target/bench-cache/` (the 1M one takes
//! minutes), keyed by FIXTURE_VERSION and a hash of `src/ledger/*.rs`: a change to
//! the ledger's code or format regenerates them. `BENCH_SCALE_SIZES` (default
//! "20000,1000000") picks the sizes; `BENCH_SCALE_TIMEOUT` (s, default 900) bounds
//! each start and each scrape, so a slow ledger is measured, never hangs the suite.
//!
//! `cargo bench --bench scale` (env: BENCH_RUNS, BENCH_SCALE_SIZES, BENCH_SCRAPES).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;
use x402d::ledger::{Auth, Caps, Ledger, Outcome, Reserve};
use x402d::money::Usd;

const CMD: &str = "cargo bench --bench scale";
/// Bump when the generator itself changes what it writes.
const FIXTURE_VERSION: u32 = 1;
/// Payments in flight while generating (the writer batches them per commit).
const GEN_CONCURRENCY: u64 = 1024;
const DAY_MS: i64 = 86_400_000;

fn timeout() -> Duration {
    Duration::from_secs_f64(env_num("BENCH_SCALE_TIMEOUT", 900.0))
}

fn sizes() -> Vec<u64> {
    std::env::var("BENCH_SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![20_000, 1_000_000])
}

/// FNV-1a over the ledger's sources: the cache key's "format version".
fn ledger_source_hash() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ledger");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        for b in std::fs::read(&f).unwrap_or_default() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-cache")
}

/// Payment `i` of `n`: through the ledger's own transitions, dated `start_ms`
/// plus i/n of the span (so history fills every day and month window).
///
/// The one place that knows the ledger's transition API: a reservation that
/// carries its authorization (one durable commit), then its outcome.
async fn one_payment(l: &Ledger, i: u64, at_ms: i64) {
    let id = l
        .reserve(Reserve {
            now_ms: at_ms,
            app: if i.is_multiple_of(4) {
                "agent"
            } else {
                "bench"
            }
            .into(),
            model: Some("gpt-4o-mini".into()),
            route: "/v1/chat/completions".into(),
            network: "eip155:84532".into(),
            asset: USDC_BASE_SEPOLIA.into(),
            pay_to: PAY_TO.into(),
            amount: Usd(1000),
            caps: Caps::default(),
            auth: Some(Auth {
                payer: PAYER.into(),
                nonce: format!("0x{i:064x}"),
                valid_before: (at_ms / 1000) as u64 + 300,
                payment_identifier: None,
            }),
        })
        .await
        .expect("reserve")
        .expect("no cap");
    l.finish(
        id,
        Outcome::Settled {
            tx: Some(format!("0x{:064x}", i ^ 0xabcdef)),
        },
        at_ms + 900,
    )
    .await
    .expect("finish");
}

/// The cached ledger of `n` payments, generated when missing.
fn fixture(rt: &tokio::runtime::Runtime, n: u64) -> PathBuf {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "ledger-{n}-v{FIXTURE_VERSION}-{}.redb",
        ledger_source_hash()
    ));
    if path.exists() {
        println!(
            "ledger of {n} payments: cached {} ({:.1} MB)",
            path.display(),
            file_mb(&path)
        );
        return path;
    }
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let now = x402d::now_ms();
    let start_ms = now - 400 * DAY_MS;
    let span = (now - 60_000 - start_ms) as f64;
    let t = Instant::now();
    let (l, _) = Ledger::open(&partial, jiff::tz::TimeZone::UTC, now).expect("open");
    let l = Arc::new(l);
    let next = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..GEN_CONCURRENCY.min(n) {
            let (l, next) = (l.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let at = start_ms + (span * i as f64 / n as f64) as i64;
                    one_payment(&l, i, at).await;
                    if (i + 1).is_multiple_of(100_000) {
                        println!(
                            "  generated {} payments in {:.0} s",
                            i + 1,
                            t.elapsed().as_secs_f64()
                        );
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(l);
    // The writer closes the file once the last handle is gone (a file not
    // closed would be repaired by every start measured from it).
    x402d::ledger::wait_closed(Duration::from_secs(60));
    std::fs::rename(&partial, &path).unwrap();
    println!(
        "ledger of {n} payments: generated through the ledger API in {:.1} s ({:.0} payments/s), {:.1} MB, cached as {}",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64(),
        file_mb(&path),
        path.display()
    );
    path
}

fn file_mb(p: &Path) -> f64 {
    std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1048576.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `GET` on a keep-alive std connection: ms until the whole reply is in,
/// the status and the body's length.
fn get(s: &mut TcpStream, port: u16, path: &str) -> Option<(f64, u16, usize)> {
    let t = Instant::now();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let k = s.read(&mut chunk).ok()?;
        if k == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..k]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            if buf.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                return Some((t.elapsed().as_secs_f64() * 1e3, status, len));
            }
        }
    }
}

struct Start {
    /// exec → first byte of an HTTP answer (ms).
    ready_ms: f64,
    metrics_first_ms: f64,
    metrics_ms: Vec<f64>,
}

/// Starts x402d on a state dir holding `ledger` (copied; `None` = fresh),
/// measures start-up and `/metrics`, stops it with SIGTERM.
fn start_on(ledger: Option<&Path>, scrapes: usize) -> Option<Start> {
    let dir = TempDir::new("scale");
    let state = dir.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    if let Some(l) = ledger {
        let copy = state.join("ledger.redb");
        std::fs::copy(l, &copy).unwrap();
        // On disk before the clock starts: the daemon's first fdatasync would
        // otherwise write back the whole fresh copy (a gigabyte at 1M payments),
        // which no real start-up pays.
        std::fs::File::open(&copy)
            .and_then(|f| f.sync_all())
            .unwrap();
    }
    let port = free_port();
    let cfg = write_config(
        &dir.0,
        "http://127.0.0.1:9",
        &format!("127.0.0.1:{port}"),
        &format!("{BENCH_APP}\n[apps.agent]\napi_key = \"sk-agent\"\n"),
        &new_service(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stop = |child: &mut std::process::Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = child.wait();
    };
    let mut s = loop {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) {
            break s;
        }
        if t0.elapsed() > timeout() || matches!(child.try_wait(), Ok(Some(_))) {
            println!(
                "  x402d did not accept within {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            stop(&mut child);
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    s.set_read_timeout(Some(timeout())).unwrap();
    // The first answer (a 404 for a probe path) is "ready".
    let ready_ms =
        get(&mut s, port, "/x402d-bench-probe").map(|_| t0.elapsed().as_secs_f64() * 1e3);
    let metrics_first_ms = match get(&mut s, port, "/metrics") {
        Some((ms, 200, len)) => {
            println!("  GET /metrics: 200, {len} bytes");
            Some(ms)
        }
        other => {
            println!("  GET /metrics did not answer 200: {other:?}");
            None
        }
    };
    let mut metrics_ms = Vec::new();
    for _ in 0..scrapes {
        match get(&mut s, port, "/metrics") {
            Some((ms, 200, _)) => metrics_ms.push(ms),
            _ => break,
        }
    }
    drop(s);
    stop(&mut child);
    Some(Start {
        ready_ms: ready_ms?,
        metrics_first_ms: metrics_first_ms?,
        metrics_ms: sorted(metrics_ms),
    })
}

fn main() {
    header(
        "history at scale: start-up and GET /metrics on ledgers generated through the ledger API",
        CMD,
    );
    let rt = runtime();
    let scrapes = env_num("BENCH_SCRAPES", 20.0) as usize;
    let mut cases: Vec<(String, Option<PathBuf>)> = vec![("fresh".into(), None)];
    for n in sizes() {
        cases.push((format!("{n}"), Some(fixture(&rt, n))));
    }
    let mut figs = Figures::default();
    for run in 0..runs() {
        for (name, path) in &cases {
            match start_on(path.as_deref(), scrapes) {
                Some(s) => {
                    println!(
                        "run {run} ledger {name}: exec → first HTTP answer {:.1} ms; GET /metrics first {:.2} ms, then median {:.2} ms, max {:.2} ms (n={})",
                        s.ready_ms,
                        s.metrics_first_ms,
                        pct(&s.metrics_ms, 50.0),
                        s.metrics_ms.last().copied().unwrap_or(f64::NAN),
                        s.metrics_ms.len()
                    );
                    figs.push(&format!("start-up {name}"), "ms", s.ready_ms);
                    figs.push(&format!("metrics first {name}"), "ms", s.metrics_first_ms);
                    figs.push(&format!("metrics {name}"), "ms", pct(&s.metrics_ms, 50.0));
                }
                None => println!("run {run} ledger {name}: not measured (see above)"),
            }
        }
    }
    println!("\nsummary over {} runs:", runs());
    figs.print();
    let show = |k: &str| {
        let s = figs.get(k);
        if s.n == 0 {
            "not measured".to_string()
        } else {
            s.show(2, "ms")
        }
    };
    let label = |name: &str| match name {
        "fresh" => "a fresh ledger".to_string(),
        n => format!("a ledger of {} payments", group(n)),
    };
    for (name, _) in &cases {
        result(
            &format!("start-up on {}: exec → first HTTP answer", label(name)),
            match name.as_str() {
                "fresh" => "—",
                "1000000" => "≤ 50 ms, and within max(1.5x, +5 ms) of fresh",
                _ => "within max(1.5x, +5 ms) of fresh",
            },
            &show(&format!("start-up {name}")),
            CMD,
        );
    }
    for (name, _) in &cases {
        result(
            &format!(
                "GET /metrics on {} (median of {scrapes} on a keep-alive connection; first one)",
                label(name)
            ),
            match name.as_str() {
                "fresh" => "—",
                "1000000" => "≤ 5 ms, and within max(2x, +2 ms) of fresh",
                _ => "within max(2x, +2 ms) of fresh",
            },
            &format!(
                "{}; first {}",
                show(&format!("metrics {name}")),
                show(&format!("metrics first {name}"))
            ),
            CMD,
        );
    }
}

/// 1000000 → "1,000,000".
fn group(n: &str) -> String {
    let mut out = String::new();
    for (i, c) in n.chars().enumerate() {
        if i > 0 && (n.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
