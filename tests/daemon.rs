//! The daemon's lifecycle through the real binary: the one shutdown sequence
//! (payment flows drained, the bound admin socket removed), socket activation
//! under the loopback rule, app-side timeouts, and what `status` reports.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";

fn signal(d: &Daemon, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &d.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// A paid call whose app hung up mid-call still settles when the daemon is
/// stopped: stop waits for the payment flow, records its outcome, then exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_a_paid_flow_whose_client_hung_up() {
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 2000,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let url = d.url("/v1/chat/completions");
    let call = tokio::spawn(async move { request("POST", &url, &[], CHAT).await });
    // The seller holds a verified payment; the app gives up and closes its connection.
    assert!(wait_until(Duration::from_secs(10), || seller
        .counts()
        .verified
        == 1));
    call.abort();
    let _ = call.await;
    signal(&d, "TERM");
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", d.log());
    let ps = d.payments();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["state"], "settled", "{ps:?}\n{}", d.log());
}

/// A second SIGTERM stops waiting: the unfinished payment stays `signed`, counted
/// against caps until the next start resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_signal_cuts_the_drain_short() {
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 120_000,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let url = d.url("/v1/chat/completions");
    let call = tokio::spawn(async move { request("POST", &url, &[], CHAT).await });
    assert!(wait_until(Duration::from_secs(10), || seller
        .counts()
        .verified
        == 1));
    call.abort();
    let _ = call.await;
    signal(&d, "TERM");
    assert!(wait_until(Duration::from_secs(10), || d
        .log()
        .contains("no longer accepting")));
    signal(&d, "TERM");
    assert!(d.child.wait().unwrap().success(), "{}", d.log());
    assert!(d.log().contains("second stop signal"), "{}", d.log());
    // Cut short, the flow is dropped: its payment stays counted, either still
    // `signed` (at risk from the next start) or already recorded `at_risk` by the
    // dropped payment, whichever the writer committed before the exit. Never released.
    let ps = d.payments();
    assert!(
        ps[0]["state"] == "signed" || ps[0]["state"] == "at_risk",
        "{ps:?}"
    );
}

/// The admin socket removed at exit is the one bound at start, even after a
/// reload changed `state_dir` (which only takes effect at the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_removes_the_bound_admin_socket_after_a_state_dir_reload() {
    let seller = Seller::start(SellerCfg::default()).await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let sock = d.state_dir().join("admin.sock");
    assert!(sock.exists());
    let other = d.dir.0.join("elsewhere");
    let text = std::fs::read_to_string(&d.config).unwrap();
    let old = format!("state_dir = \"{}\"", d.state_dir().display());
    assert!(text.contains(&old), "{text}");
    std::fs::write(
        &d.config,
        text.replace(&old, &format!("state_dir = \"{}\"", other.display())),
    )
    .unwrap();
    signal(&d, "HUP");
    assert!(wait_until(Duration::from_secs(5), || d
        .log()
        .contains("`state_dir` changed but needs a restart")));
    signal(&d, "TERM");
    assert!(d.child.wait().unwrap().success(), "{}", d.log());
    assert!(!sock.exists(), "{} left behind", sock.display());
}

/// A free TCP port on `ip` (bound, then released).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `systemd-socket-activate -l ADDR x402d serve` with a fresh config; returns the
/// process (its stderr piped) once a first connection triggered the start.
fn socket_activate(dir: &TempDir, listen: &str) -> (std::process::Child, PathBuf) {
    let config = dir.0.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "upstream = \"http://127.0.0.1:9\"\nstate_dir = \"{}\"\n{SEPOLIA}",
            dir.0.join("state").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("systemd-socket-activate")
        .args(["-l", listen])
        .arg(bin())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (apt-get install systemd)");
    (child, config)
}

/// Connects (retrying until systemd-socket-activate listens), which starts x402d.
fn trigger(addr: &str) -> std::net::TcpStream {
    let start = std::time::Instant::now();
    loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("connect {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A socket passed by systemd obeys the loopback rule like `listen` does: a
/// wildcard socket is refused unless `allow_remote = true`.
#[test]
fn socket_activation_on_a_wildcard_address_is_refused() {
    let dir = TempDir::new("sa-any");
    let port = free_port("0.0.0.0");
    let (mut child, _) = socket_activate(&dir, &format!("0.0.0.0:{port}"));
    let _conn = trigger(&format!("127.0.0.1:{port}"));
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let exited = wait_until(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert!(
        exited && !status.success(),
        "served a wildcard socket:\n{err}"
    );
    assert!(
        err.contains(&format!("0.0.0.0:{port}")) && err.contains("allow_remote"),
        "{err}"
    );
}

/// On a loopback address the passed socket is served, and `status` reports the
/// address really listened on (not a hard-coded 127.0.0.1).
#[test]
fn socket_activation_on_loopback_serves_and_status_names_the_address() {
    let dir = TempDir::new("sa-lo");
    let port = free_port("127.0.0.2");
    let addr = format!("127.0.0.2:{port}");
    let (mut child, config) = socket_activate(&dir, &addr);
    let mut conn = trigger(&addr);
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut l = log2.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let ready = wait_until(Duration::from_secs(20), || {
        log.lock().unwrap().contains("x402d ready")
    });
    let text = log.lock().unwrap().clone();
    if !ready {
        let _ = child.kill();
        panic!("not ready:\n{text}");
    }
    assert!(
        text.contains("using the socket passed by systemd"),
        "{text}"
    );
    // The connection that started it is served.
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 "), "{reply}");
    let out = x402d(&["--config", config.to_str().unwrap(), "status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["listen"], addr.as_str(), "{v}");
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait().unwrap().success());
}

/// `listen` takes an IP:port; a host name is refused naming the key, with the fix.
#[test]
fn listen_host_name_is_refused_naming_listen_with_the_ip_to_write() {
    let dir = TempDir::new("listen");
    let config = dir.0.join("config.toml");
    std::fs::write(&config, "listen = \"localhost:8402\"\n").unwrap();
    let out = x402d(&["--config", config.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`listen`") && err.contains("\"127.0.0.1:8402\""),
        "{err}"
    );
}

fn connect(d: &Daemon) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(d.addr).unwrap();
    // Far longer than the daemon's timeouts below: hitting it means no disconnect.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the daemon closes the connection; panics if it never does.
fn read_until_closed(s: &mut std::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&got).into_owned();
            }
            Err(e) => panic!(
                "the daemon kept the connection open ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// An app that sends half a header, idles on a keep-alive connection, or stalls
/// its body is disconnected instead of holding the connection forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_apps_are_disconnected() {
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 1500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start_env(
        &seller.url(),
        SEPOLIA,
        &[
            ("X402D_HEADER_TIMEOUT_MS", "500"),
            ("X402D_BODY_TIMEOUT_MS", "500"),
        ],
    );
    let host = format!("Host: {}\r\n", d.addr);
    // Half a header.
    let mut s = connect(&d);
    s.write_all(format!("POST /v1/chat/completions HTTP/1.1\r\n{host}").as_bytes())
        .unwrap();
    read_until_closed(&mut s);
    // Idle keep-alive after a complete exchange.
    let mut s = connect(&d);
    s.write_all(format!("GET /metrics HTTP/1.1\r\n{host}\r\n").as_bytes())
        .unwrap();
    let got = read_until_closed(&mut s);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // A body that stops halfway: refused, then closed.
    let mut s = connect(&d);
    s.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
        )
        .as_bytes(),
    )
    .unwrap();
    let got = read_until_closed(&mut s);
    assert!(
        got.starts_with("HTTP/1.1 400") && got.contains("bad_request_body"),
        "{got}"
    );
    assert_eq!(seller.counts().requests, 0);
    // A slow upstream is not a slow app: paid calls that outlast the header timeout
    // (plain, and streamed with heartbeats) are answered in full.
    let r = request("POST", &d.url("/v1/chat/completions"), &[], CHAT).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let streamed = CHAT.replace("\"model\"", "\"stream\":true,\"model\"");
    let r = request("POST", &d.url("/v1/chat/completions"), &[], streamed).await;
    assert_eq!(r.status, 200);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("paid hello") && body.contains("[DONE]"),
        "{body}"
    );
}

/// Issue 17: `serve` runs one async worker by default (a second one was woken to
/// look for work at every wake-up: 28 vs 20 context switches per paid call), and
/// `X402D_WORKER_THREADS` raises it. Paid calls work either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_one_async_worker_unless_told_otherwise() {
    let seller = Seller::start(SellerCfg::default()).await;
    for (env, want) in [(&[][..], 1), (&[("X402D_WORKER_THREADS", "3")][..], 3)] {
        let d = Daemon::start_env(&seller.url(), SEPOLIA, env);
        let r = request("POST", &d.url("/v1/chat/completions"), &[], CHAT).await;
        assert_eq!(r.status, 200, "{}", d.log());
        // The runtime's own count (the blocking pool's threads share the workers' name).
        let log = d.log();
        let field = format!("workers={want}");
        assert!(
            log.lines()
                .any(|l| l.contains("x402d ready") && l.split_whitespace().any(|w| w == field)),
            "env {env:?}: {log}"
        );
    }
}
