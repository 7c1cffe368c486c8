//! Test harness: an in-process x402 mock seller that really verifies payments,
//! and the real `x402d` binary started against it on loopback.
#![allow(dead_code)]

use alloy_primitives::{B256, U256, keccak256};
use alloy_sol_types::Eip712Domain;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// anvil dev key #1 (public test key; only ever used on loopback).
pub const PAYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
pub const PAYER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
pub const PAY_TO: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
pub const USDC_BASE_SEPOLIA: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
pub const USDC_BASE: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";

/// The completion the seller returns; odd spacing on purpose, to prove byte-identical relay.
pub const COMPLETION: &str = "{\"id\":\"chatcmpl-x402d\",  \"object\":\"chat.completion\",\"created\":1764115200,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"paid hello\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n";

pub mod verify;

/// What the seller does once it has verified a payment.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterPay {
    /// 200 + completion + settlement header.
    Ok,
    /// Takes the payment, then answers 500.
    Fail500,
    /// Refuses the payment with a new 402.
    Reject,
    /// Takes the payment, then drops the connection without answering.
    Drop,
    /// Takes the payment, then answers `302 Found` with this `Location`.
    Redirect(String),
    /// Answers 200 with the completion, but its `PAYMENT-RESPONSE` says settlement failed.
    SettleFailed200,
    /// Answers 402 with a `PAYMENT-RESPONSE` saying settlement failed (what
    /// `@x402/express` does when the facilitator's settle fails).
    SettleFailed402,
}

#[derive(Clone, Debug)]
pub struct SellerCfg {
    pub version: u8,
    pub amount: String,
    pub network: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout: u64,
    pub extra: Value,
    /// Replaces the generated `accepts` list entirely.
    pub accepts: Option<Value>,
    /// Raw `PAYMENT-REQUIRED` header value to send instead of the generated one.
    pub raw_header: Option<String>,
    /// Raw 402 body instead of the generated one (v1) or `{}` (v2).
    pub raw_body: Option<Vec<u8>>,
    pub after_pay: AfterPay,
    /// Answer unpaid `GET /v1/models` with 200 instead of 402.
    pub free_models: bool,
    /// Delay before answering a paid request.
    pub paid_delay_ms: u64,
    /// Status for unpaid requests (402 normally).
    pub unpaid_status: u16,
    /// Body of the free `GET /v1/models` (default: one budget model).
    pub models_body: Option<String>,
    /// Completion body for paid calls (default: `COMPLETION`).
    pub completion: Option<String>,
    /// Extra headers on a non-402 unpaid answer (e.g. `location` for a redirect).
    pub unpaid_headers: Vec<(String, String)>,
    /// When > 0, the unpaid 402's body is this many MiB, streamed lazily in 64 KiB
    /// chunks (a v1 JSON document that never ends); `Counts::streamed_bytes` says how
    /// much the seller got to write.
    pub huge_body_mb: u64,
    /// The unpaid 402 sends its headers and the start of a v1 body, then stalls forever.
    pub stall_body: bool,
    /// Seconds added to the seller's clock in the `Date` header of its unpaid 402.
    pub date_offset_secs: i64,
    /// Extra headers on every answer to a paid request (e.g. forged `x-x402d-*`).
    pub paid_headers: Vec<(String, String)>,
    /// Raw JSON text of the v2 402's top-level `extensions`.
    pub extensions: Option<String>,
    /// Takes (settles) the first verified payment, then drops the connection.
    pub drop_first_paid: bool,
    /// A payment whose `payment-identifier` id was already paid gets that call's
    /// answer again, without verifying or settling anything (idempotency by id).
    pub replay_by_id: bool,
}

impl Default for SellerCfg {
    fn default() -> Self {
        SellerCfg {
            version: 2,
            amount: "1000".into(),
            network: "eip155:84532".into(),
            asset: USDC_BASE_SEPOLIA.into(),
            pay_to: PAY_TO.into(),
            max_timeout: 300,
            extra: json!({"name": "USDC", "version": "2"}),
            accepts: None,
            raw_header: None,
            raw_body: None,
            after_pay: AfterPay::Ok,
            free_models: true,
            paid_delay_ms: 0,
            unpaid_status: 402,
            models_body: None,
            completion: None,
            unpaid_headers: Vec::new(),
            huge_body_mb: 0,
            stall_body: false,
            date_offset_secs: 0,
            paid_headers: Vec::new(),
            extensions: None,
            drop_first_paid: false,
            replay_by_id: false,
        }
    }
}

#[derive(Default, Debug, Clone)]
pub struct Counts {
    /// Every request that reached the seller (except free model-list fetches).
    pub requests: usize,
    /// Free `GET /v1/models` fetches (x402d refreshes its model list in the background).
    pub models_requests: usize,
    /// Requests without a payment header.
    pub unpaid: usize,
    /// Requests carrying any payment header (valid or not).
    pub payment_attempts: usize,
    /// Payments that verified.
    pub verified: usize,
    /// Sum of verified amounts (atomic units).
    pub verified_amount: u64,
    /// Payment verification failures, with reasons.
    pub invalid: Vec<String>,
    /// Requests that carried an Authorization header.
    pub saw_authorization: usize,
    /// Request bodies as received.
    pub bodies: Vec<Bytes>,
    /// Nonces of verified payments.
    pub nonces: Vec<B256>,
    /// Payer (`from`, the recovered signer) of each verified payment.
    pub payers: Vec<String>,
    /// Path of each counted request.
    pub paths: Vec<String>,
    /// Bytes of streamed 402 bodies (`huge_body_mb`) actually handed to the socket.
    pub streamed_bytes: u64,
    /// Every payment header received, as received.
    pub payment_headers: Vec<Vec<u8>>,
    /// Paid answers replayed by payment id (`replay_by_id`).
    pub replayed: usize,
    /// Payment ids of verified payments, with their nonce.
    pub paid_ids: Vec<(String, B256)>,
    /// Whether `drop_first_paid` has dropped its one connection.
    pub dropped_first: bool,
}

impl Counts {
    /// How many different payment headers arrived (re-sends of one payment are one).
    pub fn distinct_payments(&self) -> usize {
        self.payment_headers.iter().collect::<HashSet<_>>().len()
    }
}

/// The decoded JSON of a payment header.
pub fn payment_doc(header: &[u8]) -> Value {
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(header)
            .unwrap(),
    )
    .unwrap()
}

/// The `payment-identifier` id a payment header carries, if any.
pub fn payment_id_of(header: &[u8]) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(header)
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v["extensions"]["payment-identifier"]["info"]["id"]
        .as_str()
        .map(str::to_string)
}

pub struct Seller {
    pub addr: SocketAddr,
    pub cfg: Arc<Mutex<SellerCfg>>,
    pub counts: Arc<Mutex<Counts>>,
    used: Arc<Mutex<HashSet<B256>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Seller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Seller {
    pub async fn start(cfg: SellerCfg) -> Seller {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = Arc::new(Mutex::new(cfg));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let used = Arc::new(Mutex::new(HashSet::new()));
        let (c2, n2, u2) = (cfg.clone(), counts.clone(), used.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (c3, n3, u3) = (c2.clone(), n2.clone(), u2.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (c, n, u) = (c3.clone(), n3.clone(), u3.clone());
                        async move { handle(req, addr, c, n, u).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Seller {
            addr,
            cfg,
            counts,
            used,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    pub fn set(&self, f: impl FnOnce(&mut SellerCfg)) {
        f(&mut self.cfg.lock().unwrap());
    }

    /// Nonces this seller took (verified = settled, for this mock): what a chain
    /// would show as used.
    pub fn used_nonces(&self) -> Arc<Mutex<HashSet<B256>>> {
        self.used.clone()
    }
}

fn requirement(cfg: &SellerCfg, resource: &str) -> Value {
    let mut r = json!({
        "scheme": "exact",
        "network": cfg.network,
        "asset": cfg.asset,
        "payTo": cfg.pay_to,
        "maxTimeoutSeconds": cfg.max_timeout,
        "extra": cfg.extra,
    });
    if cfg.version == 1 {
        r["maxAmountRequired"] = json!(cfg.amount);
        r["resource"] = json!(resource);
        r["description"] = json!("chat");
        r["mimeType"] = json!("application/json");
    } else {
        r["amount"] = json!(cfg.amount);
    }
    r
}

/// Response body of the mock seller: buffered, or a lazy stream for hostile bodies.
pub type SellerBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn boxed(r: Response<Full<Bytes>>) -> Response<SellerBody> {
    r.map(|b| b.map_err(|never| match never {}).boxed())
}

/// A 402 body produced lazily: `prefix`, then `left` bytes of padding in 64 KiB
/// chunks (or, with `stall`, nothing more ever). Counts what it hands out.
struct HostileBody {
    prefix: Option<Bytes>,
    left: u64,
    stall: bool,
    chunk: Bytes,
    counts: Arc<Mutex<Counts>>,
}

impl hyper::body::Body for HostileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        let data = if let Some(p) = self.prefix.take() {
            p
        } else if self.stall {
            // Never ready and never woken: the body just stops arriving.
            return Poll::Pending;
        } else if self.left == 0 {
            return Poll::Ready(None);
        } else {
            let n = self.left.min(self.chunk.len() as u64);
            self.left -= n;
            self.chunk.slice(..n as usize)
        };
        self.counts.lock().unwrap().streamed_bytes += data.len() as u64;
        Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.stall {
            return hyper::body::SizeHint::default();
        }
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        hyper::body::SizeHint::with_exact(prefix + self.left)
    }
}

/// The unpaid 402, with the body replaced by a huge or stalled stream when configured.
fn unpaid_402(
    cfg: &SellerCfg,
    resource: &str,
    counts: &Arc<Mutex<Counts>>,
) -> Response<SellerBody> {
    let mut r = payment_required(cfg, resource, "Payment required");
    if cfg.date_offset_secs != 0 {
        let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(cfg.date_offset_secs);
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&t)
            .unwrap();
        r.headers_mut().insert("date", date.parse().unwrap());
    }
    if cfg.huge_body_mb == 0 && !cfg.stall_body {
        return boxed(r);
    }
    let (mut parts, _) = r.into_parts();
    parts.headers.remove("content-length");
    // Looks like the start of a real v1 document, so only a size limit can stop it.
    let prefix = Bytes::from_static(
        b"{\"x402Version\":1,\"error\":\"Payment required\",\"accepts\":[],\"pad\":\"",
    );
    let body = HostileBody {
        prefix: Some(prefix),
        left: cfg.huge_body_mb * 1024 * 1024,
        stall: cfg.stall_body,
        chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        counts: counts.clone(),
    };
    Response::from_parts(parts, body.boxed())
}

fn payment_required(cfg: &SellerCfg, resource: &str, error: &str) -> Response<Full<Bytes>> {
    let accepts = cfg
        .accepts
        .clone()
        .unwrap_or_else(|| json!([requirement(cfg, resource)]));
    let mut b = Response::builder()
        .status(StatusCode::PAYMENT_REQUIRED)
        .header("content-type", "application/json");
    let body = if cfg.version == 1 {
        cfg.raw_body.clone().unwrap_or_else(|| {
            json!({"x402Version": 1, "error": error, "accepts": accepts})
                .to_string()
                .into_bytes()
        })
    } else {
        let doc = json!({"x402Version": 2, "error": error,
            "resource": {"url": resource, "description": "chat", "mimeType": "application/json"},
            "accepts": accepts});
        let mut text = doc.to_string();
        if let Some(ext) = &cfg.extensions {
            // Spliced in as raw text, so tests can check the echo byte for byte.
            text.pop();
            text.push_str(&format!(",\"extensions\":{ext}}}"));
        }
        let h = cfg
            .raw_header
            .clone()
            .unwrap_or_else(|| base64::engine::general_purpose::STANDARD.encode(text));
        // from_bytes: a hostile header may carry obs-text (bytes >= 0x80).
        b = b.header(
            "payment-required",
            hyper::header::HeaderValue::from_bytes(h.as_bytes()).unwrap(),
        );
        cfg.raw_body.clone().unwrap_or_else(|| b"{}".to_vec())
    };
    b.body(Full::new(Bytes::from(body))).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn chain_id(network: &str) -> u64 {
    match network {
        "eip155:84532" | "base-sepolia" => 84532,
        "eip155:8453" | "base" => 8453,
        "eip155:137" | "polygon" => 137,
        "eip155:42161" | "arbitrum" => 42161,
        other => other.trim_start_matches("eip155:").parse().unwrap_or(0),
    }
}

/// The `from` of a payment header that `verify` accepted (so it is the signer).
fn payer_of(header: &[u8]) -> String {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(header)
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&raw).unwrap_or_default();
    let from = v["payload"]["authorization"]["from"].as_str().unwrap_or("");
    from.parse::<alloy_primitives::Address>()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Verifies a payment header against what this seller asked for.
fn verify(
    cfg: &SellerCfg,
    header: &[u8],
    used: &Mutex<HashSet<B256>>,
) -> Result<(B256, u64), String> {
    let domain = Eip712Domain::new(
        Some(cfg.extra["name"].as_str().unwrap_or("").to_string().into()),
        Some(
            cfg.extra["version"]
                .as_str()
                .unwrap_or("")
                .to_string()
                .into(),
        ),
        Some(U256::from(chain_id(&cfg.network))),
        Some(cfg.asset.parse().map_err(|_| "seller asset")?),
        None,
    );
    let (nonce, value) = verify::verify_payment(
        header,
        &verify::Expect {
            version: cfg.version,
            pay_to_text: &cfg.pay_to,
            pay_to: cfg.pay_to.parse().map_err(|_| "seller payTo")?,
            amount: U256::from_str_radix(&cfg.amount, 10).map_err(|_| "seller amount")?,
            max_timeout: cfg.max_timeout,
            domain: &domain,
            used,
        },
    )?;
    Ok((nonce, value.to::<u64>()))
}

async fn handle(
    req: Request<Incoming>,
    addr: SocketAddr,
    cfg: Arc<Mutex<SellerCfg>>,
    counts: Arc<Mutex<Counts>>,
    used: Arc<Mutex<HashSet<B256>>>,
) -> Result<Response<SellerBody>, std::io::Error> {
    let cfg = cfg.lock().unwrap().clone();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let resource = format!("http://{addr}{}", parts.uri.path());
    let payment = parts
        .headers
        .get(if cfg.version == 1 {
            "x-payment"
        } else {
            "payment-signature"
        })
        .or_else(|| parts.headers.get("payment-signature"))
        .or_else(|| parts.headers.get("x-payment"))
        .map(|h| h.as_bytes().to_vec());
    let free_models = parts.uri.path() == "/v1/models" && cfg.free_models && payment.is_none();
    if free_models {
        counts.lock().unwrap().models_requests += 1;
    }
    if !free_models {
        let mut c = counts.lock().unwrap();
        c.requests += 1;
        c.paths.push(parts.uri.path().to_string());
        c.bodies.push(body.clone());
        if parts.headers.contains_key("authorization") {
            c.saw_authorization += 1;
        }
        if let Some(p) = &payment {
            c.payment_attempts += 1;
            c.payment_headers.push(p.clone());
        } else {
            c.unpaid += 1;
        }
    }
    let Some(payment) = payment else {
        if parts.uri.path() == "/v1/models" && cfg.free_models {
            let list = cfg.models_body.clone().unwrap_or_else(|| {
                "{\"object\":\"list\",\"data\":[{\"id\":\"gpt-4o-mini\",\"object\":\"model\",\"created\":0,\"owned_by\":\"openai\"}]}".into()
            });
            return Ok(boxed(Response::new(Full::new(Bytes::from(list)))));
        }
        if cfg.unpaid_status != 402 {
            let mut b = Response::builder().status(cfg.unpaid_status);
            for (k, v) in &cfg.unpaid_headers {
                b = b.header(k.as_str(), v.as_str());
            }
            return Ok(boxed(
                b.body(Full::new(Bytes::from_static(
                    b"{\"error\":{\"message\":\"upstream says no\"}}",
                )))
                .unwrap(),
            ));
        }
        return Ok(unpaid_402(&cfg, &resource, &counts));
    };
    if cfg.replay_by_id
        && let Some(pid) = payment_id_of(&payment)
    {
        let known = {
            let c = counts.lock().unwrap();
            c.paid_ids.iter().find(|(i, _)| *i == pid).map(|(_, n)| *n)
        };
        if let Some(nonce) = known {
            counts.lock().unwrap().replayed += 1;
            let ok = SellerCfg {
                after_pay: AfterPay::Ok,
                ..cfg.clone()
            };
            return paid_reply(&ok, nonce);
        }
    }
    match verify(&cfg, &payment, &used) {
        Err(e) => {
            counts.lock().unwrap().invalid.push(e.clone());
            Ok(boxed(payment_required(&cfg, &resource, &e)))
        }
        Ok((nonce, amount)) => {
            if cfg.after_pay == AfterPay::Reject {
                used.lock().unwrap().remove(&nonce);
                return Ok(boxed(payment_required(
                    &cfg,
                    &resource,
                    "insufficient_funds",
                )));
            }
            let drop_now = {
                let mut c = counts.lock().unwrap();
                c.verified += 1;
                c.verified_amount += amount;
                c.nonces.push(nonce);
                c.payers.push(payer_of(&payment));
                if let Some(pid) = payment_id_of(&payment) {
                    c.paid_ids.push((pid, nonce));
                }
                let first = cfg.drop_first_paid && !c.dropped_first;
                c.dropped_first |= first;
                first
            };
            if drop_now {
                return Err(std::io::Error::other("drop after settling"));
            }
            if cfg.paid_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(cfg.paid_delay_ms)).await;
            }
            let mut reply = paid_reply(&cfg, nonce);
            if let Ok(r) = reply.as_mut() {
                for (k, v) in &cfg.paid_headers {
                    r.headers_mut().append(
                        hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
            }
            reply
        }
    }
}

/// The seller's answer to a verified payment, as `after_pay` says.
fn paid_reply(cfg: &SellerCfg, nonce: B256) -> Result<Response<SellerBody>, std::io::Error> {
    match cfg.after_pay.clone() {
        AfterPay::Fail500 => Ok(boxed(
            Response::builder()
                .status(500)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    b"{\"error\":{\"message\":\"model crashed\"}}",
                )))
                .unwrap(),
        )),
        AfterPay::Drop => Err(std::io::Error::other("drop")),
        AfterPay::SettleFailed402 => {
            let settle = json!({"success": false, "errorReason": "unexpected_settle_error", "transaction": "", "network": cfg.network});
            Ok(boxed(
                Response::builder()
                    .status(402)
                    .header("content-type", "application/json")
                    .header(
                        "payment-response",
                        base64::engine::general_purpose::STANDARD.encode(settle.to_string()),
                    )
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap(),
            ))
        }
        AfterPay::SettleFailed200 => {
            let settle =
                json!({"success": false, "errorReason": "settle_timeout", "network": cfg.network});
            Ok(boxed(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header(
                        "payment-response",
                        base64::engine::general_purpose::STANDARD.encode(settle.to_string()),
                    )
                    .body(Full::new(Bytes::from(COMPLETION)))
                    .unwrap(),
            ))
        }
        AfterPay::Redirect(location) => Ok(boxed(
            Response::builder()
                .status(302)
                .header("location", location.as_str())
                .body(Full::new(Bytes::from_static(b"moved")))
                .unwrap(),
        )),
        _ => {
            let tx = keccak256(nonce.as_slice());
            let settle = json!({"success": true, "payer": PAYER, "transaction": tx.to_string(), "network": cfg.network});
            let name = if cfg.version == 1 {
                "x-payment-response"
            } else {
                "payment-response"
            };
            Ok(boxed(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header(
                        name,
                        base64::engine::general_purpose::STANDARD.encode(settle.to_string()),
                    )
                    .body(Full::new(Bytes::from(
                        cfg.completion
                            .clone()
                            .unwrap_or_else(|| COMPLETION.to_string()),
                    )))
                    .unwrap(),
            ))
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).unwrap();
        let p = std::env::temp_dir().join(format!("x402d-{tag}-{}", hex::encode(b)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_x402d"))
}

/// Runs the binary inside a fresh session keyring (kernel keyutils needs one).
pub fn x402d(args: &[&str]) -> Command {
    let mut c = Command::new("keyctl");
    c.arg("session").arg("-").arg(bin()).args(args);
    c
}

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub config: PathBuf,
    pub log: Arc<Mutex<String>>,
    pub service: String,
    /// Extra environment for the daemon (and `wallet import`), e.g. `RUST_LOG=trace`.
    pub env: Vec<(String, String)>,
    /// stdout + stderr of the `wallet import` run at start, if any.
    pub import_log: String,
}

impl Daemon {
    /// Writes a config (upstream = seller, networks = base-sepolia + `extra`), imports
    /// the payer key into a per-test keyring entry, and starts `x402d serve`.
    pub fn start(upstream: &str, extra: &str) -> Daemon {
        Self::start_with(upstream, extra, true)
    }

    pub fn start_with(upstream: &str, extra: &str, import_key: bool) -> Daemon {
        Self::start_full(upstream, extra, import_key, &[])
    }

    /// Like `start`, with extra environment for `wallet import` and the daemon
    /// (it overrides the default `RUST_LOG=info`).
    pub fn start_env(upstream: &str, extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_full(upstream, extra, true, env)
    }

    fn start_full(upstream: &str, extra: &str, import_key: bool, env: &[(&str, &str)]) -> Daemon {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut import_log = String::new();
        let dir = TempDir::new("d");
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).unwrap();
        let service = format!("x402d-test-{}", hex::encode(b));
        let config = dir.0.join("config.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\nstate_dir = \"{}\"\n{}{extra}\n",
            dir.0.join("state").display(),
            // A test may set its own (as the first line of `extra`).
            if extra.contains("upstream_timeout_secs") {
                ""
            } else {
                "upstream_timeout_secs = 10\n"
            }
        );
        let text = merge_tables(&text, &service);
        std::fs::write(&config, text).unwrap();
        if import_key {
            let mut c = x402d(&["--config", config.to_str().unwrap(), "wallet", "import"])
                .envs(env.iter().map(|(k, v)| (k, v)))
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
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), PAYER);
            import_log.push_str(&String::from_utf8_lossy(&out.stdout));
            import_log.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        let mut d = Self::spawn(dir, config, service, env);
        d.import_log = import_log;
        d
    }

    fn spawn(dir: TempDir, config: PathBuf, service: String, env: Vec<(String, String)>) -> Daemon {
        let mut child = x402d(&["--config", config.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
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
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(a)) => a,
            _ => {
                let _ = child.kill();
                panic!("x402d did not become ready:\n{}", log.lock().unwrap());
            }
        };
        Daemon {
            child,
            addr,
            dir,
            config,
            log,
            service,
            env,
            import_log: String::new(),
        }
    }

    /// Restarts on the same config and state (e.g. after a kill).
    pub fn restart(mut self) -> Daemon {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, TempDir(PathBuf::new()));
        let config = self.config.clone();
        let service = self.service.clone();
        let env = std::mem::take(&mut self.env);
        std::mem::forget(self);
        Self::spawn(dir, config, service, env)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["--config", self.config.to_str().unwrap()];
        a.extend_from_slice(args);
        x402d(&a)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    pub fn payments(&self) -> Vec<Value> {
        let out = self.cli(&["payments", "--json", "--limit", "100000"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.0.join("state")
    }

    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut c = Command::new("keyctl");
        c.args([
            "session",
            "-",
            bin().to_str().unwrap(),
            "--config",
            self.config.to_str().unwrap(),
            "wallet",
            "remove",
            "--yes",
        ]);
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// Puts the wallet table in (and merges with a `[wallet]` the test may add).
fn merge_tables(text: &str, service: &str) -> String {
    if text.contains("[wallet]") {
        text.replace(
            "[wallet]",
            &format!("[wallet]\nkeyring_service = \"{service}\""),
        )
    } else {
        format!("{text}\n[wallet]\nkeyring_service = \"{service}\"\n")
    }
}

/// A tiny HTTP/1.1 client for tests.
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, k: &str) -> Option<String> {
        self.headers.get(k).map(|v| v.to_str().unwrap().to_string())
    }
}

pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let uri: hyper::Uri = url.parse().unwrap();
    let host = uri.authority().unwrap().to_string();
    let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str());
    let mut has_host = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("host") {
            has_host = true;
        }
        b = b.header(*k, *v);
    }
    if !has_host {
        b = b.header("host", host);
    }
    let resp = sender
        .send_request(b.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub const CHAT: &str =
    "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

pub async fn chat(d: &Daemon, key: &str) -> Reply {
    let auth = format!("Bearer {key}");
    request(
        "POST",
        &d.url("/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        CHAT,
    )
    .await
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
