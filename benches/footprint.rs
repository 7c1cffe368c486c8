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

use std::io::{Read, Write};
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

/// One start: (exec → TCP connect succeeds, exec → first byte of an HTTP
/// response, wallet loaded), times in ms. The connect succeeds as soon as the
/// listening socket is bound, which x402d does BEFORE loading the wallet and
/// entering its accept loop; the HTTP answer (a 404 for a probe path) is the
/// real "ready". `via_keyctl`: `keyctl session - x402d …` (as the tests run it;
/// the key in the persistent keyring is reachable); else x402d exec'd directly.
fn start_once(config: &Path, port: u16, via_keyctl: bool) -> (f64, f64, bool) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = if via_keyctl {
        let mut c = Command::new("keyctl");
        c.args(["session", "-"]).arg(bin());
        c
    } else {
        Command::new(bin())
    };
    let t0 = Instant::now();
    let mut child = cmd
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut stream, connect_ms) = loop {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) {
            break (s, t0.elapsed().as_secs_f64() * 1e3);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("x402d did not accept within 20 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    let probe = format!(
        "GET /x402d-bench-probe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(probe.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut first = [0u8; 1];
    let http_ms = match stream.read(&mut first) {
        Ok(1) => t0.elapsed().as_secs_f64() * 1e3,
        _ => f64::NAN,
    };
    drop(stream);
    // Stop it cleanly (SIGTERM) so the ledger is closed before the next start.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let mut log = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut log);
    (connect_ms, http_ms, log.contains("x402d ready; wallet 0x"))
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
                    let mut done = Vec::with_capacity(per);
                    for _ in 0..per {
                        let r = c.call("POST", "/v1/chat/completions", body.clone()).await;
                        done.push((t0.elapsed().as_secs_f64(), r.status == 200));
                    }
                    done
                }));
            }
            let mut done = Vec::new();
            for h in hs {
                done.extend(h.await.unwrap());
            }
            done.sort_by(|a, b| a.0.total_cmp(&b.0));
            let ok = done.iter().filter(|x| x.1).count();
            let el = t0.elapsed().as_secs_f64();
            // Throughput of the first and the last fifth of the calls.
            let fifth = done.len() / 5;
            let rate = |a: usize, b: usize| {
                let t_a = if a == 0 { 0.0 } else { done[a - 1].0 };
                (b - a) as f64 / (done[b - 1].0 - t_a)
            };
            let (first, last) = (rate(0, fifth), rate(done.len() - fifth, done.len()));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = d.rss_kb();
            println!(
                "run {run}: {ok}/{} paid calls in {el:.1} s ({first:.0}/s over the first fifth, {last:.0}/s over the last); RSS before {before} kB, after {after} kB, growth {} kB; HWM {} kB",
                per * 16,
                after as i64 - before as i64,
                hwm_kb(d.pid())
            );
            figs.push("paid/s, first fifth of the 10,000", "1/s", first);
            figs.push("paid/s, last fifth of the 10,000", "1/s", last);
            if run + 1 == runs() && std::env::var_os("BENCH_SKIP_RECLAIM").is_none() {
                // Idle for 61 s (finished calls are kept up to 60 s for retry coalescing;
                // the at-risk resolver scans the ledger every 30 s): RSS every 5 s.
                let mut line = String::new();
                for i in 1..=12 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    line.push_str(&format!(" {}s:{}", i * 5, d.rss_kb()));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                println!("run {run}: idle RSS timeline (kB) after the 10,000 calls:{line}");
                let mut c = Conn::open(d.addr).await;
                c.call("POST", "/v1/chat/completions", body.clone()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let later = d.rss_kb();
                println!(
                    "run {run}: 61 s later, after one more call: RSS {later} kB ({:+} kB vs idle)",
                    later as i64 - before as i64
                );
                figs.push("RSS 61 s after the 10,000 paid calls", "MB", later as f64 / 1024.0);
            }
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
                    let (c, h, _) = start_once(&cfg, port, true);
                    println!(
                        "restart {i} on a {ok}-payment ledger: TCP connect after {c:.1} ms, first HTTP response after {h:.1} ms"
                    );
                    figs.push("ready (HTTP) on a 10,000-payment ledger", "ms", h);
                    figs.push("TCP connect on a 10,000-payment ledger", "ms", c);
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
    let mut wallet_loaded = [0usize; 2];
    for i in 0..starts {
        for (m, via_keyctl) in [(0, true), (1, false)] {
            let port = free_port();
            let sub = dir.0.join(format!("s{i}-{m}"));
            std::fs::create_dir_all(&sub).unwrap();
            let cfg = write_config(
                &sub,
                "http://127.0.0.1:9",
                &format!("127.0.0.1:{port}"),
                BENCH_APP,
                &service,
            );
            let (c, h, w) = start_once(&cfg, port, via_keyctl);
            wallet_loaded[m] += w as usize;
            let how = if via_keyctl { "keyctl" } else { "direct" };
            figs.push(&format!("exec → TCP connect ({how})"), "ms", c);
            figs.push(&format!("exec → first HTTP response ({how})"), "ms", h);
        }
    }
    remove_key(&key_cfg);
    println!(
        "start-up: wallet loaded from the keyring in {}/{starts} starts via keyctl, {}/{starts} direct",
        wallet_loaded[0], wallet_loaded[1]
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
            "{} (growth {}){}",
            figs.get("RSS after 10,000 paid calls").show(1, "MB"),
            figs.get("RSS growth over 10,000 paid calls").show(1, "MB"),
            match figs.get("RSS 61 s after the 10,000 paid calls") {
                r if r.n > 0 => format!("; 61 s later {:.1} MB", r.med),
                _ => String::new(),
            }
        ),
        CMD,
    );
    result(
        "paid calls/s at c=16: first vs last fifth of the 10,000",
        "—",
        &format!(
            "{:.0} → {:.0} /s",
            figs.get("paid/s, first fifth of the 10,000").med,
            figs.get("paid/s, last fifth of the 10,000").med
        ),
        CMD,
    );
    let mmm = |n: &str| {
        let s = figs.get(n);
        format!(
            "min {:.1} / median {:.1} / max {:.1} ms",
            s.min, s.med, s.max
        )
    };
    result(
        &format!(
            "start-up: exec → first HTTP response ({starts} runs, `keyctl session - x402d serve`, fresh state; wallet loaded {}/{starts})",
            wallet_loaded[0]
        ),
        "≤ 50 ms",
        &mmm("exec → first HTTP response (keyctl)"),
        CMD,
    );
    result(
        "start-up: exec → TCP connect succeeds (listen socket bound, before the wallet load)",
        "—",
        &mmm("exec → TCP connect (keyctl)"),
        CMD,
    );
    result(
        &format!(
            "start-up: exec → first HTTP response ({starts} runs, direct exec, no keyctl; wallet loaded {}/{starts})",
            wallet_loaded[1]
        ),
        "≤ 50 ms",
        &mmm("exec → first HTTP response (direct)"),
        CMD,
    );
    if figs.get("ready (HTTP) on a 10,000-payment ledger").n > 0 {
        result(
            "start-up on a ledger of 10,000 payments: exec → first HTTP response (5 runs)",
            "≤ 50 ms",
            &mmm("ready (HTTP) on a 10,000-payment ledger"),
            CMD,
        );
    }
}
