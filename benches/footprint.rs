//! Benchmark 3: memory and start-up of the release binary.
//!
//! - RSS idle: VmRSS from /proc/<pid>/status 1 s after "ready" (wallet loaded,
//!   ledger open, no traffic).
//! - RSS with 1,000 open keep-alive connections: 1,000 app connections, each has
//!   made one `GET /v1/models` (passed through, free) and stays open.
//! - RSS after 10,000 paid calls (concurrency 16, verifying seller), and the
//!   growth over the idle figure of the same process.
//! - Start-up: exec of `x402d serve` (direct, not via keyctl; the key is in the
//!   persistent keyring) to the first successful TCP connect on its port,
//!   polled every 100 µs, over BENCH_STARTS runs (default 20), fresh state dir
//!   each time; plus restarts on a ledger holding 10,000 payments.
//!
//! `cargo bench --bench footprint` (env: BENCH_RUNS, BENCH_STARTS, BENCH_PAID).

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const CMD: &str = "cargo bench --bench footprint";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Exec → port accepts, in ms; also whether the wallet was loaded at start.
fn start_once(config: &Path, port: u16) -> (f64, bool) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ms = loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
            break t0.elapsed().as_secs_f64() * 1e3;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("x402d did not accept within 20 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    // Stop it cleanly (SIGTERM) so the ledger is closed before the next start.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut log = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut log);
    (ms, log.contains("x402d ready; wallet 0x"))
}

fn main() {
    header("memory and start-up (release binary)", CMD);
    let rt = runtime();
    let mut figs = Figures::default();
    let paid_calls = env_num("BENCH_PAID", 10_000.0) as usize;
    let starts = env_num("BENCH_STARTS", 20.0) as usize;

    rt.block_on(async {
        let seller = Seller::start(1000).await;
        let body = chat_body(2048);
        for run in 0..runs() {
            // Idle, then 1,000 connections.
            let d = Daemon::start(&seller.url(), BENCH_APP, true);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let idle = d.rss_kb();
            let threads = threads(d.pid());
            let mut conns = Vec::with_capacity(1000);
            for _ in 0..1000 {
                conns.push(Conn::open(d.addr).await);
            }
            // One request on each, 50 at a time, all connections kept open.
            let mut rest = conns;
            let mut done = Vec::with_capacity(1000);
            while !rest.is_empty() {
                let wave: Vec<Conn> = rest.drain(..rest.len().min(50)).collect();
                let mut hs = Vec::new();
                for mut c in wave {
                    hs.push(tokio::spawn(async move {
                        let r = c.call("GET", "/v1/models", bytes::Bytes::new()).await;
                        assert_eq!(r.status, 200);
                        c
                    }));
                }
                for h in hs {
                    done.push(h.await.unwrap());
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let with_conns = d.rss_kb();
            let open = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
                .map(|r| r.count())
                .unwrap_or(0);
            println!(
                "run {run}: idle {idle} kB ({threads} threads); with {} open keep-alive connections {with_conns} kB ({open} fds in x402d), HWM {} kB",
                done.len(),
                hwm_kb(d.pid())
            );
            figs.push("RSS idle", "MB", idle as f64 / 1024.0);
            figs.push("RSS with 1,000 connections", "MB", with_conns as f64 / 1024.0);
            drop(done);
            drop(d);

            // 10,000 paid calls on a fresh daemon.
            let d = Daemon::start(&seller.url(), BENCH_APP, true);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let before = d.rss_kb();
            let per = paid_calls / 16;
            let t0 = Instant::now();
            let mut hs = Vec::new();
            for _ in 0..16 {
                let (addr, body) = (d.addr, body.clone());
                hs.push(tokio::spawn(async move {
                    let mut c = Conn::open(addr).await;
                    let mut ok = 0;
                    for _ in 0..per {
                        if c.call("POST", "/v1/chat/completions", body.clone()).await.status == 200 {
                            ok += 1;
                        }
                    }
                    ok
                }));
            }
            let mut ok = 0;
            for h in hs {
                ok += h.await.unwrap();
            }
            let el = t0.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = d.rss_kb();
            println!(
                "run {run}: {ok}/{} paid calls in {el:.1} s; RSS before {before} kB, after {after} kB, growth {} kB; HWM {} kB",
                per * 16,
                after as i64 - before as i64,
                hwm_kb(d.pid())
            );
            figs.push("RSS after 10,000 paid calls", "MB", after as f64 / 1024.0);
            figs.push(
                "RSS growth over 10,000 paid calls",
                "MB",
                (after as f64 - before as f64) / 1024.0,
            );

            // Restarts on the ledger that now holds ~10,000 payments (last run only).
            if run + 1 == runs() {
                let port = free_port();
                let cfg = d.dir.0.join("restart.toml");
                let text = std::fs::read_to_string(&d.config)
                    .unwrap()
                    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
                std::fs::write(&cfg, text).unwrap();
                let mut dd = d;
                let _ = dd.child.kill();
                let _ = dd.child.wait();
                for i in 0..5 {
                    let (ms, _) = start_once(&cfg, port);
                    println!("restart {i} on a {ok}-payment ledger: ready in {ms:.1} ms");
                    figs.push("ready on a 10,000-payment ledger", "ms", ms);
                }
            }
        }
    });

    // Start-up on a fresh state dir.
    let dir = TempDir::new("start");
    let service = new_service();
    let key_cfg = write_config(
        &dir.0,
        "http://127.0.0.1:9",
        "127.0.0.1:0",
        BENCH_APP,
        &service,
    );
    import_key(&key_cfg);
    let mut wallet_loaded = 0;
    for i in 0..starts {
        let port = free_port();
        let sub = dir.0.join(format!("s{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let cfg = write_config(
            &sub,
            "http://127.0.0.1:9",
            &format!("127.0.0.1:{port}"),
            BENCH_APP,
            &service,
        );
        let (ms, w) = start_once(&cfg, port);
        wallet_loaded += w as usize;
        figs.push("exec → accepting (fresh state)", "ms", ms);
    }
    remove_key(&key_cfg);
    println!("start-up: wallet loaded from the keyring in {wallet_loaded}/{starts} starts");
    let s = figs.get("exec → accepting (fresh state)");
    println!(
        "start-up over {starts} runs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        s.min, s.med, s.max
    );

    println!("\nsummary:");
    figs.print();
    result(
        "RSS idle",
        "≤ 10 MB",
        &figs.get("RSS idle").show(1, "MB"),
        CMD,
    );
    result(
        "RSS with 1,000 open keep-alive connections",
        "≤ 64 MB",
        &figs.get("RSS with 1,000 connections").show(1, "MB"),
        CMD,
    );
    result(
        "RSS after 10,000 paid calls (growth over idle)",
        "—",
        &format!(
            "{} (growth {})",
            figs.get("RSS after 10,000 paid calls").show(1, "MB"),
            figs.get("RSS growth over 10,000 paid calls").show(1, "MB")
        ),
        CMD,
    );
    result(
        &format!("start-up: exec → port accepts ({starts} runs, fresh state)"),
        "≤ 50 ms",
        &format!(
            "min {:.1} / median {:.1} / max {:.1} ms",
            s.min, s.med, s.max
        ),
        CMD,
    );
    let r = figs.get("ready on a 10,000-payment ledger");
    if r.n > 0 {
        result(
            "start-up on a ledger of 10,000 payments (5 runs)",
            "—",
            &format!(
                "min {:.1} / median {:.1} / max {:.1} ms",
                r.min, r.med, r.max
            ),
            CMD,
        );
    }
}
