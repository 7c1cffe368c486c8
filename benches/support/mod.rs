//! Shared pieces of the benchmark suite: machine description, statistics, the
//! release `x402d` binary started on loopback, an instant mock upstream, an
//! instant x402 seller that verifies every payment, and a keep-alive hyper load
//! generator. Figures are printed, never asserted.
//!
//! Every bench prints `RESULT|figure|target|measured|command` lines that
//! `bench/run.sh` turns into the final Markdown table.
#![allow(dead_code)]

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::Eip712Domain;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Machine, settings, output

/// `nproc`, CPU model, kernel and load average, for every bench header.
pub fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("nproc={nproc}; cpu={model}; kernel={kernel}; loadavg(1/5/15m)={load}")
}

/// Prints the header every bench starts with.
pub fn header(title: &str, command: &str) {
    println!("== {title}");
    println!("machine: {}", machine());
    println!("command: {command}");
    println!("binary:  {}", bin().display());
    println!(
        "runs:    {} (figures: median over runs, with min..max)",
        runs()
    );
}

/// Runs per figure (`BENCH_RUNS`, default 3, at least 3 for the report).
pub fn runs() -> usize {
    env_num("BENCH_RUNS", 3.0) as usize
}

/// Seconds per load phase (`BENCH_SECS`, default 3).
pub fn secs() -> f64 {
    env_num("BENCH_SECS", 3.0)
}

pub fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One row of the final table (parsed by bench/run.sh).
pub fn result(figure: &str, target: &str, measured: &str, command: &str) {
    println!("RESULT|{figure}|{target}|{measured}|{command}");
}

// ---------------------------------------------------------------------------
// Statistics

/// Nearest-rank percentile of an ascending slice (`p` in 0..=100).
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// min, median, max of per-run figures.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub min: f64,
    pub med: f64,
    pub max: f64,
    pub n: usize,
}

pub fn spread(v: &[f64]) -> Spread {
    let s = sorted(v.to_vec());
    let med = if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    Spread {
        min: *s.first().unwrap_or(&f64::NAN),
        med,
        max: *s.last().unwrap_or(&f64::NAN),
        n: s.len(),
    }
}

impl Spread {
    /// `12.3 (min 11.0, max 14.2)` with `dec` decimals and a unit.
    pub fn show(&self, dec: usize, unit: &str) -> String {
        format!(
            "{:.dec$} {unit} (min {:.dec$}, max {:.dec$}; n={})",
            self.med, self.min, self.max, self.n
        )
    }
}

/// Named per-run figures, printed as one `min / median / max` line each.
#[derive(Default)]
pub struct Figures {
    rows: Vec<(String, String, Vec<f64>)>,
}

impl Figures {
    pub fn push(&mut self, name: &str, unit: &str, v: f64) {
        match self.rows.iter_mut().find(|r| r.0 == name) {
            Some(r) => r.2.push(v),
            None => self.rows.push((name.into(), unit.into(), vec![v])),
        }
    }
    pub fn get(&self, name: &str) -> Spread {
        self.rows
            .iter()
            .find(|r| r.0 == name)
            .map(|r| spread(&r.2))
            .unwrap_or(Spread {
                min: f64::NAN,
                med: f64::NAN,
                max: f64::NAN,
                n: 0,
            })
    }
    pub fn print(&self) {
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        println!(
            "  {:<w$}  {:>10}  {:>10}  {:>10}  unit",
            "figure", "min", "median", "max"
        );
        for (name, unit, v) in &self.rows {
            let s = spread(v);
            println!(
                "  {name:<w$}  {:>10.2}  {:>10.2}  {:>10.2}  {unit}",
                s.min, s.med, s.max
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Process figures from /proc

pub fn rss_kb(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

pub fn hwm_kb(pid: u32) -> u64 {
    status_field(pid, "VmHWM:")
}

pub fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads:")
}

fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of the whole process (all threads), in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let (u, s) = cpu_split(pid);
    u + s
}

/// (utime, stime) of the whole process (all threads), in seconds.
pub fn cpu_split(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are fields 14 and 15 overall.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    (ticks(11) as f64 / clk_tck(), ticks(12) as f64 / clk_tck())
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// How busy the machine was with OTHER processes during a phase: system-wide
/// busy CPU time (/proc/stat) minus this bench process and x402d.
pub struct Busy {
    t: Instant,
    sys: f64,
    me: f64,
    pid: Option<u32>,
    daemon: f64,
}

fn sys_busy_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let g = |i: usize| f.get(i).copied().unwrap_or(0.0);
    (g(0) + g(1) + g(2) + g(5) + g(6) + g(7)) / clk_tck()
}

impl Busy {
    pub fn start(daemon: Option<u32>) -> Busy {
        Busy {
            t: Instant::now(),
            sys: sys_busy_secs(),
            me: cpu_secs(std::process::id()),
            pid: daemon,
            daemon: daemon.map_or(0.0, cpu_secs),
        }
    }
    /// Percent of all CPUs used by other processes since `start`.
    pub fn others_pct(&self) -> f64 {
        let el = self.t.elapsed().as_secs_f64();
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let sys = sys_busy_secs() - self.sys;
        let me = cpu_secs(std::process::id()) - self.me;
        let d = self.pid.map_or(0.0, cpu_secs) - self.daemon;
        (100.0 * (sys - me - d) / (el * ncpu)).max(0.0)
    }
}

/// Samples how busy the machine is with other work for `secs` (printed in headers).
pub fn background_load(secs: f64) -> f64 {
    let b = Busy::start(None);
    std::thread::sleep(Duration::from_secs_f64(secs));
    b.others_pct()
}

// ---------------------------------------------------------------------------
// The x402d binary

/// The binary under test: `X402D_BIN`, else the one cargo built for this bench
/// (target/release/x402d under `cargo bench`).
pub fn bin() -> PathBuf {
    std::env::var_os("X402D_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_x402d")))
}

/// anvil dev key #1 (public test key; only ever used on loopback).
pub const PAYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
pub const PAYER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
pub const PAY_TO: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
pub const USDC_BASE_SEPOLIA: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
/// The app the benches call as (no caps beyond the ones set in `BENCH_APP`).
pub const API_KEY: &str = "sk-bench";
/// `[apps.bench]` with caps high enough for any run (the cap checks still run).
pub const BENCH_APP: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n\n[apps.bench]\napi_key = \"sk-bench\"\ndaily = \"1000000\"\nmonthly = \"10000000\"\n";

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).unwrap();
        let p = std::env::temp_dir().join(format!("x402d-bench-{tag}-{}", hex::encode(b)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary inside a fresh session keyring, as the tests do.
pub fn x402d(args: &[&str]) -> Command {
    let mut c = Command::new("keyctl");
    c.arg("session").arg("-").arg(bin()).args(args);
    c
}

/// Writes a config; `listen` defaults to an ephemeral port.
pub fn write_config(
    dir: &Path,
    upstream: &str,
    listen: &str,
    extra: &str,
    service: &str,
) -> PathBuf {
    let config = dir.join("config.toml");
    let text = format!(
        "listen = \"{listen}\"\nupstream = \"{upstream}\"\nstate_dir = \"{}\"\nupstream_timeout_secs = 30\n{extra}\n\n[wallet]\nkeyring_service = \"{service}\"\n",
        dir.join("state").display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

pub fn new_service() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("x402d-bench-{}", hex::encode(b))
}

/// `x402d wallet import` of the test key under `config`'s keyring entry.
pub fn import_key(config: &Path) {
    let mut c = x402d(&["--config", config.to_str().unwrap(), "wallet", "import"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyctl (apt-get install keyutils) and the x402d binary");
    c.stdin
        .take()
        .unwrap()
        .write_all(PAYER_KEY.as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "wallet import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn remove_key(config: &Path) {
    let _ = x402d(&[
        "--config",
        config.to_str().unwrap(),
        "wallet",
        "remove",
        "--yes",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status();
}

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub config: PathBuf,
    /// Last lines of stderr (the log is drained continuously so it never blocks).
    pub log: Arc<Mutex<VecDeque<String>>>,
    pub log_lines: Arc<AtomicU64>,
}

impl Daemon {
    /// Config (upstream, `extra`), optional key import, then `x402d serve` under
    /// `keyctl session -` (keyctl execs, so the child pid is x402d's).
    pub fn start(upstream: &str, extra: &str, with_key: bool) -> Daemon {
        let dir = TempDir::new("d");
        let service = new_service();
        let config = write_config(&dir.0, upstream, "127.0.0.1:0", extra, &service);
        if with_key {
            import_key(&config);
        }
        let mut cmd = match std::env::var("X402D_WRAP") {
            // e.g. X402D_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out"
            Ok(w) if !w.trim().is_empty() => {
                let mut c = Command::new("keyctl");
                c.args(["session", "-"])
                    .args(w.split_whitespace())
                    .arg(bin());
                c.args(["--config", config.to_str().unwrap(), "serve"]);
                c
            }
            _ => x402d(&["--config", config.to_str().unwrap(), "serve"]),
        };
        if let Some(l) = std::env::var_os("BENCH_RUST_LOG") {
            cmd.env("RUST_LOG", l);
        } else {
            // The daemon's own default ("info"), as a user would run it.
            cmd.env_remove("RUST_LOG");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let log_lines = Arc::new(AtomicU64::new(0));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (log2, n2) = (log.clone(), log_lines.clone());
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("x402d ready")
                    && let Some(t) = tx.take()
                {
                    let addr = line
                        .split("listen=")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                        .and_then(|s| s.parse::<SocketAddr>().ok());
                    let _ = t.send(addr);
                }
                n2.fetch_add(1, Ordering::Relaxed);
                let mut l = log2.lock().unwrap();
                if l.len() >= 40 {
                    l.pop_front();
                }
                l.push_back(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(a)) => a,
            _ => {
                let _ = child.kill();
                panic!("x402d did not become ready:\n{}", Self::tail(&log));
            }
        };
        Daemon {
            child,
            addr,
            dir,
            config,
            log,
            log_lines,
        }
    }

    fn tail(log: &Mutex<VecDeque<String>>) -> String {
        log.lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn log_tail(&self) -> String {
        Self::tail(&self.log)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.pid())
    }

    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid())
    }
}

impl Daemon {
    /// SIGTERM (graceful: a profiler wrapper gets to write its output), then
    /// SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let t = Instant::now();
        while t.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let grace = if std::env::var_os("X402D_WRAP").is_some() {
            Duration::from_secs(120)
        } else {
            Duration::from_secs(5)
        };
        self.stop(grace);
        remove_key(&self.config);
    }
}

// ---------------------------------------------------------------------------
// Upstreams (in-process, on the bench's runtime)

/// Serves `handler` on a fresh loopback port with hyper (keep-alive).
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, handler)
}

/// Serves `handler` on an already bound listener.
pub fn serve_on<F, Fut>(listener: tokio::net::TcpListener, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, std::convert::Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

pub const MODELS: &[u8] = b"{\"object\":\"list\",\"data\":[{\"id\":\"gpt-4o-mini\",\"object\":\"model\",\"created\":0,\"owned_by\":\"openai\"}]}";
pub const COMPLETION: &[u8] = b"{\"id\":\"chatcmpl-x402d\",\"object\":\"chat.completion\",\"created\":1764115200,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hello\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n";

/// An upstream that answers 200 at once: the model list, or a completion.
/// The counter counts `GET /v1/models` requests that reached it.
pub async fn instant_mock() -> (SocketAddr, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let addr = serve(move |req: Request<Incoming>| {
        let h = h.clone();
        async move {
            let models = req.uri().path() == "/v1/models";
            if models {
                h.fetch_add(1, Ordering::Relaxed);
            }
            let _ = req.into_body().collect().await;
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(if models {
                    MODELS
                } else {
                    COMPLETION
                })))
                .unwrap()
        }
    })
    .await;
    (addr, hits)
}

/// A chat request body of exactly `size` bytes (padding in the user message).
pub fn chat_body(size: usize) -> Bytes {
    let head = "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"";
    let tail = "\"}]}";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut s = String::with_capacity(size);
    s.push_str(head);
    for i in 0..pad {
        s.push((b'a' + (i % 26) as u8) as char);
    }
    s.push_str(tail);
    Bytes::from(s)
}

#[path = "../../tests/common/verify.rs"]
mod verify;

/// An instant x402 v2 seller: unpaid → 402 with requirements; paid → verify
/// (recover signer = from, payTo, amount, validAfter/validBefore, unused nonce)
/// → 200 + completion + settlement header, or a 402 naming the failure.
pub struct Seller {
    pub addr: SocketAddr,
    pub verified: Arc<AtomicU64>,
    pub invalid: Arc<AtomicU64>,
    pub last_invalid: Arc<Mutex<Option<String>>>,
}

struct SellerState {
    required_header: String,
    amount: U256,
    pay_to: Address,
    domain: Eip712Domain,
    max_timeout: u64,
    used: Mutex<HashSet<B256>>,
    verified: Arc<AtomicU64>,
    invalid: Arc<AtomicU64>,
    last_invalid: Arc<Mutex<Option<String>>>,
}

impl Seller {
    /// `amount` in atomic USDC units (1000 = $0.001).
    pub async fn start(amount: u64) -> Seller {
        // Bind first: the 402 names this seller's URL as the resource.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let max_timeout = 300;
        let doc = json!({
            "x402Version": 2,
            "error": "Payment required",
            "resource": {"url": format!("http://{addr}/v1/chat/completions"), "description": "chat", "mimeType": "application/json"},
            "accepts": [{
                "scheme": "exact",
                "network": "eip155:84532",
                "asset": USDC_BASE_SEPOLIA,
                "payTo": PAY_TO,
                "amount": amount.to_string(),
                "maxTimeoutSeconds": max_timeout,
                "extra": {"name": "USDC", "version": "2"},
            }],
        });
        let verified = Arc::new(AtomicU64::new(0));
        let invalid = Arc::new(AtomicU64::new(0));
        let last_invalid = Arc::new(Mutex::new(None));
        let st = Arc::new(SellerState {
            required_header: base64::engine::general_purpose::STANDARD.encode(doc.to_string()),
            amount: U256::from(amount),
            pay_to: PAY_TO.parse().unwrap(),
            domain: Eip712Domain::new(
                Some("USDC".into()),
                Some("2".into()),
                Some(U256::from(84532u64)),
                Some(USDC_BASE_SEPOLIA.parse().unwrap()),
                None,
            ),
            max_timeout,
            used: Mutex::new(HashSet::new()),
            verified: verified.clone(),
            invalid: invalid.clone(),
            last_invalid: last_invalid.clone(),
        });
        serve_on(listener, move |req| {
            let st = st.clone();
            async move { seller_handle(&st, req).await }
        });
        Seller {
            addr,
            verified,
            invalid,
            last_invalid,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn seller_handle(st: &SellerState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let payment = parts
        .headers
        .get("payment-signature")
        .map(|h| h.as_bytes().to_vec());
    let Some(payment) = payment else {
        if parts.uri.path() == "/v1/models" {
            // Free, like the test harness's default seller.
            return Response::new(Full::new(Bytes::from_static(MODELS)));
        }
        return payment_required(st);
    };
    match verify(st, &payment) {
        Ok(nonce) => {
            st.verified.fetch_add(1, Ordering::Relaxed);
            let tx = keccak256(nonce.as_slice());
            let settle = json!({"success": true, "payer": PAYER, "transaction": tx.to_string(), "network": "eip155:84532"});
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header(
                    "payment-response",
                    base64::engine::general_purpose::STANDARD.encode(settle.to_string()),
                )
                .body(Full::new(Bytes::from_static(COMPLETION)))
                .unwrap()
        }
        Err(e) => {
            st.invalid.fetch_add(1, Ordering::Relaxed);
            *st.last_invalid.lock().unwrap() = Some(e);
            payment_required(st)
        }
    }
}

fn payment_required(st: &SellerState) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::PAYMENT_REQUIRED)
        .header("content-type", "application/json")
        .header("payment-required", st.required_header.as_str())
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The same checks as the test harness's seller (one shared verifier).
fn verify(st: &SellerState, header: &[u8]) -> Result<B256, String> {
    verify::verify_payment(
        header,
        &verify::Expect {
            version: 2,
            pay_to_text: PAY_TO,
            pay_to: st.pay_to,
            amount: st.amount,
            max_timeout: st.max_timeout,
            domain: &st.domain,
            used: &st.used,
        },
    )
    .map(|(nonce, _)| nonce)
}

// ---------------------------------------------------------------------------
// Load generator: one hyper HTTP/1.1 keep-alive connection per worker

pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
    host: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn {
            tx,
            host: addr.to_string(),
        }
    }

    /// One request, body read to the end.
    pub async fn call(&mut self, method: &str, path: &str, body: Bytes) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.host.as_str())
            .header("authorization", "Bearer sk-bench")
            .header("user-agent", "x402d-bench");
        if !body.is_empty() {
            b = b.header("content-type", "application/json");
        }
        let req = b.body(Full::new(body)).unwrap();
        self.tx.ready().await.expect("connection closed");
        let resp = self.tx.send_request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }
}

/// Latency in microseconds of one closure call.
pub async fn timed<F: std::future::Future<Output = T>, T>(f: F) -> (f64, T) {
    let t = Instant::now();
    let r = f.await;
    (t.elapsed().as_secs_f64() * 1e6, r)
}

/// Percentile line for latencies in µs.
pub fn lat_line(sorted_us: &[f64]) -> String {
    format!(
        "p50 {:.0} µs, p95 {:.0} µs, p99 {:.0} µs, max {:.0} µs (n={})",
        pct(sorted_us, 50.0),
        pct(sorted_us, 95.0),
        pct(sorted_us, 99.0),
        sorted_us.last().copied().unwrap_or(f64::NAN),
        sorted_us.len()
    )
}

/// `callgrind_control -z|-d <pid>` when BENCH_CALLGRIND is set (x402d started under
/// `X402D_WRAP="valgrind --tool=callgrind ..."`), so a profile covers one phase only.
pub fn callgrind_control(arg: &str, pid: u32) {
    if std::env::var_os("BENCH_CALLGRIND").is_none() {
        return;
    }
    let out = Command::new("callgrind_control")
        .args([arg, &pid.to_string()])
        .output();
    if let Ok(o) = out {
        println!(
            "    callgrind_control {arg}: {}",
            String::from_utf8_lossy(&o.stdout).trim()
        );
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Per-process counters (issue 17's table: context switches, bytes written,
// durable commits and x402d's own time per paid call)

/// Voluntary + involuntary context switches of all of `pid`'s threads so far.
/// Threads that exited are not counted (x402d's live for the whole run).
pub fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut n = 0;
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        for l in s.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    n
}

/// Bytes `pid` caused to be sent to the storage layer (`/proc/<pid>/io`
/// `write_bytes`: page-cache writeback of its files, counted at write time).
pub fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `GET /metrics` of a daemon, as text.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut c = Conn::open(addr).await;
    let r = c.call("GET", "/metrics", Bytes::new()).await;
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The value of an unlabelled sample (`name value`) in Prometheus text, 0 if absent.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// A histogram's cumulative buckets `(le, count)` in Prometheus text.
pub fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let r = l.strip_prefix(&prefix)?;
            let (le, rest) = r.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// Quantile `q` (0..1) of the observations made between two scrapes of a
/// histogram, interpolated linearly inside its bucket (as PromQL's
/// `histogram_quantile`); the buckets are 25 % apart, so ±12 % at worst.
pub fn quantile_between(before: &str, after: &str, name: &str, q: f64) -> f64 {
    let (a, b) = (buckets(before, name), buckets(after, name));
    let delta: Vec<(f64, f64)> = b
        .iter()
        .map(|&(le, n)| {
            let n0 = a.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1);
            (le, n - n0)
        })
        .collect();
    let Some(&(_, total)) = delta.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lo = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return lo.0;
            }
            let width = n - lo.1;
            let frac = if width > 0.0 {
                (rank - lo.1) / width
            } else {
                1.0
            };
            return lo.0 + (le - lo.0) * frac;
        }
        lo = (le, n);
    }
    f64::NAN
}

/// The per-paid-call counters of one measured window of a daemon.
pub struct CallCounters {
    metrics: String,
    ctx: u64,
    written: u64,
}

/// The figures one window yields, per paid call.
pub struct PerCall {
    pub ctx_switches: f64,
    pub bytes_written: f64,
    pub commits: f64,
    /// x402d's own time per paid call (µs), p50 and p99, from
    /// `x402d_paid_call_overhead_seconds`; NaN on a binary without it.
    pub own_p50_us: f64,
    pub own_p99_us: f64,
}

pub const OWN_TIME: &str = "x402d_paid_call_overhead_seconds";
pub const COMMITS: &str = r#"x402d_ledger_commits_total{durable="true"}"#;

impl CallCounters {
    pub async fn start(pid: u32, addr: SocketAddr) -> CallCounters {
        // Scraped first: the scrape's own switches are not counted.
        let metrics = scrape(addr).await;
        CallCounters {
            metrics,
            ctx: ctx_switches(pid),
            written: write_bytes(pid),
        }
    }

    /// Per paid call over `calls` paid calls since `start` (the closing scrape
    /// is taken after the process counters, so it does not count either).
    pub async fn per_call(&self, pid: u32, addr: SocketAddr, calls: u64) -> PerCall {
        let ctx = ctx_switches(pid);
        let written = write_bytes(pid);
        let after = scrape(addr).await;
        let n = calls.max(1) as f64;
        PerCall {
            ctx_switches: (ctx - self.ctx) as f64 / n,
            bytes_written: (written - self.written) as f64 / n,
            commits: (sample(&after, COMMITS) - sample(&self.metrics, COMMITS)) / n,
            own_p50_us: quantile_between(&self.metrics, &after, OWN_TIME, 0.5) * 1e6,
            own_p99_us: quantile_between(&self.metrics, &after, OWN_TIME, 0.99) * 1e6,
        }
    }
}
