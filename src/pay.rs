//! The payment flow for one proxied call, top to bottom:
//!
//! ```text
//! send unpaid ──(not 402)──────────────────────────────► relay, cost 0
//!     │ 402
//!     ▼
//! parse requirements → choose one → load wallet      (refusal: nothing signed)
//!     ▼
//! Reserved   (ledger: caps checked, budget held and the authorization's payer,
//!     │       nonce and validBefore recorded, in ONE durable commit: the only
//!     │       fsync the call waits for; from here a crash means at-risk)
//!     ▼
//! Signed     (EIP-3009 signature made in memory; nothing more to persist)
//!     ▼
//! send paid ─► 2xx ───────────────────► Settled  → relay, cost = price
//!           │   (PAYMENT-RESPONSE success:false ► AtRisk → relay)
//!           ├► 402 ───────────────────► Rejected → payment_rejected error
//!           │   (a failed settlement ─► AtRisk   → payment_settlement_failed)
//!           ├► connect failed ────────► Released (the signature never left)
//!           ├► reset / timeout / 5xx ─► re-send the SAME payment (same bytes,
//!           │                           same nonce: it can never pay twice), a
//!           │                           few times with backoff while validBefore
//!           │                           is comfortably ahead:
//!           │     2xx ────────────────► Settled  → relay (the seller replayed
//!           │                           its answer by payment id, or settles now)
//!           │     402 ─► ask the chain: used ► Settled (tx unknown)
//!           │                                  → paid_answer_lost error
//!           │                           unused ► keep trying, then AtRisk
//!           │     nothing better ─────► AtRisk   → relay the 5xx / error
//!           └► anything else ─────────► AtRisk   → relay, never re-sent
//! ```
//!
//! What could move money is durable before it can: the nonce is on disk before
//! the signature exists. Outcomes are recorded without waiting for an fsync (the
//! next durable commit carries them; a crash before that leaves the payment
//! at-risk, resolved on chain: fail closed). The
//! states are types: a [`Reservation`] releases itself if dropped before signing,
//! and [`Reservation::sign`] turns it into a [`SignedPayment`], which, dropped
//! without an outcome, records itself at-risk (never released: the signature may
//! have left). So an early return or a cancelled flow can neither leak budget
//! nor release a payment the seller may settle.

use crate::config::{AppConfig, Loaded};
use crate::error::ProxyError;
use crate::ledger::{Caps, Ledger, Outcome, Reserve};
use crate::money::Usd;
use crate::openai::error::HDR_SHOULD_RETRY;
use crate::upstream::{self, Client};
use crate::wallet::{self, Wallet};
use crate::x402::{self, Refusal, header::Authorization, parse, select};
use alloy_primitives::{B256, U256};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use std::sync::Arc;
use std::time::Duration;

mod svm;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Response header: USD actually paid (or put at risk) for this call.
pub const HDR_COST: &str = "x-x402d-cost";
/// Response header: the ledger id of the payment, when there was one.
pub const HDR_PAYMENT_ID: &str = "x-x402d-payment-id";
/// Response header: ledger state of the payment (settled, at_risk).
pub const HDR_PAYMENT_STATE: &str = "x-x402d-payment-state";

/// One call as the app made it, after routing and identification.
pub struct Call {
    pub app: String,
    pub model: Option<String>,
    pub method: Method,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub use crate::wallet::slot::WalletSlot;

/// Everything the flow needs besides the call.
pub struct Payer<'a> {
    pub cfg: &'a Loaded,
    pub client: &'a Client,
    pub ledger: &'a Ledger,
    pub wallet: &'a WalletSlot,
    pub metrics: &'a crate::metrics::Metrics,
    /// Asked when a re-sent payment is refused (did the first send settle?).
    pub resolver: &'a crate::chain::Resolver,
    /// Time spent waiting on the upstream during this call, in microseconds.
    pub upstream_us: std::sync::atomic::AtomicU64,
}

/// What happened, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paid {
    Nothing,
    Settled,
    AtRisk,
}

/// How long to wait for a 402 body that holds nothing we need (v2 puts the
/// requirements in the header): enough for the usual small body, so the connection
/// can be reused for the paid request, and never long enough to delay the payment.
const IGNORED_BODY_WAIT: Duration = Duration::from_secs(1);

/// A re-send goes out only while the authorization stays valid at least this
/// long: the seller must still be able to verify and settle it.
const RESEND_MARGIN_SECS: u64 = 30;
/// The longest wait before a chain check answers (it delays the app's reply).
const CHAIN_CHECK_WAIT: Duration = Duration::from_secs(20);

/// Pause before re-send `n` (1-based): 250 ms, 500 ms, 1 s, … at most 4 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(250u64 << n.saturating_sub(1).min(4))
}

/// What a payment is recorded as in the ledger and metrics.
struct Record<'l> {
    ledger: &'l Ledger,
    metrics: &'l crate::metrics::Metrics,
    id: u64,
    app: String,
    network: &'static str,
    amount: Usd,
}

impl Record<'_> {
    fn count(&self, outcome: &Outcome) {
        let state = match outcome {
            Outcome::Settled { .. } => crate::ledger::State::Settled,
            Outcome::Rejected { .. } => crate::ledger::State::Rejected,
            Outcome::AtRisk { .. } => crate::ledger::State::AtRisk,
            Outcome::Released { .. } => crate::ledger::State::Released,
        };
        self.metrics
            .payment(&self.app, self.network, state, self.amount.atomic());
    }

    /// Records the outcome without waiting: the writer commits it without an
    /// fsync, and the next durable commit carries it to disk. If the process dies
    /// before that, the record is still signed-for and startup recovery makes it
    /// at-risk (resolved on chain): fail closed. See `Ledger::finish_detached`.
    fn finish_detached(&self, outcome: Outcome) {
        self.count(&outcome);
        self.ledger
            .finish_detached(self.id, outcome, crate::now_ms());
    }
}

/// Budget held for one payment, durably, together with the parameters of the
/// authorization that will pay it (payer, nonce, validBefore, payment id): the
/// ledger record is already signed-for, so a crash from here on leaves it at
/// risk until the chain says otherwise. No signature exists yet. It must be
/// consumed by [`Reservation::sign`] or [`Reservation::release`]; dropped
/// otherwise (an early return, an error, a cancelled flow) it releases itself,
/// which is always right because no signature can have left the process.
#[must_use = "a reservation holds budget until signed or released"]
struct Reservation<'l, A> {
    rec: Record<'l>,
    /// What was reserved for (an EIP-3009 authorization, or the inputs of a
    /// Solana transfer): the one thing `sign_with` signs.
    auth: A,
    /// False once consumed (by sign or release), so Drop does nothing.
    armed: bool,
}

impl<'l, A> Reservation<'l, A> {
    /// Checks the caps and holds the budget with the payment's identifying
    /// parameters (`recorded`), in one durable commit: the only fsync a paid call
    /// waits for.
    async fn hold(
        ledger: &'l Ledger,
        metrics: &'l crate::metrics::Metrics,
        network: &'static str,
        mut r: Reserve,
        recorded: crate::ledger::Auth,
        auth: A,
    ) -> Result<Reservation<'l, A>, ProxyError> {
        r.auth = Some(recorded);
        let (app, amount) = (r.app.clone(), r.amount);
        match ledger.reserve(r).await {
            Ok(Ok(id)) => Ok(Reservation {
                rec: Record {
                    ledger,
                    metrics,
                    id,
                    app,
                    network,
                    amount,
                },
                auth,
                armed: true,
            }),
            Ok(Err(cap)) => Err(ProxyError::BudgetExceeded {
                code: cap.code,
                message: cap.message,
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn id(&self) -> u64 {
        self.rec.id
    }

    /// Signs what was reserved for, in memory: its parameters are already
    /// durable, so the signed payment may be sent at once. If signing fails,
    /// nothing exists that could be sent, so the reservation is released.
    fn sign_with<S>(
        mut self,
        sign: impl FnOnce(&A) -> Result<S, ProxyError>,
    ) -> Result<(SignedPayment<'l>, S), ProxyError> {
        let signed = match sign(&self.auth) {
            Ok(s) => s,
            Err(e) => {
                self.release("signing failed");
                return Err(e);
            }
        };
        self.armed = false;
        let rec = self.take_record();
        Ok((SignedPayment { rec, armed: true }, signed))
    }

    /// Gives the budget back (recorded without waiting; see `Record::finish_detached`).
    fn release(mut self, why: &str) {
        self.armed = false;
        self.rec
            .finish_detached(Outcome::Released { reason: why.into() });
    }

    fn take_record(&mut self) -> Record<'l> {
        Record {
            ledger: self.rec.ledger,
            metrics: self.rec.metrics,
            id: self.rec.id,
            app: std::mem::take(&mut self.rec.app),
            network: self.rec.network,
            amount: self.rec.amount,
        }
    }
}

impl<'l> Reservation<'l, Authorization> {
    /// [`Reservation::hold`] for an EIP-3009 authorization: the ledger records
    /// its payer, nonce, validBefore and the payment id sent with it.
    async fn hold_evm(
        ledger: &'l Ledger,
        metrics: &'l crate::metrics::Metrics,
        network: &'static str,
        r: Reserve,
        auth: Authorization,
        payment_identifier: Option<String>,
    ) -> Result<Self, ProxyError> {
        let recorded = crate::ledger::Auth {
            payer: auth.from.to_string(),
            nonce: auth.nonce.to_string(),
            valid_before: auth.valid_before,
            payment_identifier,
        };
        Self::hold(ledger, metrics, network, r, recorded, auth).await
    }

    /// Signs the reserved EIP-3009 authorization (see [`Reservation::sign_with`]).
    fn sign(
        self,
        wallet: &Wallet,
        domain: &alloy_sol_types::Eip712Domain,
    ) -> Result<(SignedPayment<'l>, [u8; 65]), ProxyError> {
        self.sign_with(|auth| {
            wallet
                .sign(auth, domain)
                .map_err(|e| ProxyError::Wallet(e.to_string()))
        })
    }
}

impl<A> Drop for Reservation<'_, A> {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(
                id = self.rec.id,
                "payment flow ended before signing; releasing its reservation"
            );
            self.rec.finish_detached(Outcome::Released {
                reason: "released: the flow ended before signing".into(),
            });
        }
    }
}

/// A signed authorization that may be (or may have been) sent. It must be
/// consumed by [`SignedPayment::finish`]; dropped otherwise it is recorded as
/// at-risk, never released: once the request may have left, only the chain can say
/// the money did not move.
#[must_use = "a signed payment must be finished with its outcome"]
struct SignedPayment<'l> {
    rec: Record<'l>,
    armed: bool,
}

impl SignedPayment<'_> {
    /// Records the outcome without waiting for it to be durable: nothing after
    /// the reservation's commit waits for an fsync on the paid call's path.
    fn finish(mut self, outcome: Outcome) {
        self.armed = false;
        self.rec.finish_detached(outcome);
    }
}

impl Drop for SignedPayment<'_> {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!(
                id = self.rec.id,
                state = "at_risk",
                "payment flow ended after signing without an outcome; payment at risk"
            );
            self.rec.finish_detached(Outcome::AtRisk {
                reason: "the flow ended after signing without an outcome".into(),
            });
        }
    }
}

impl Payer<'_> {
    pub async fn run(&self, call: Call) -> Result<Upstream, ProxyError> {
        let timeout = Duration::from_secs(self.cfg.config.upstream_timeout_secs);
        let uri = self.upstream_uri(&call.path_and_query)?;

        // 1. Unpaid attempt. Nothing is signed, so every failure here is safe to retry.
        let first = self
            .send(&call, &uri, None, timeout)
            .await
            .map_err(|e| self.unpaid_error(e, timeout))?;
        if first.status() != StatusCode::PAYMENT_REQUIRED {
            return buffer(first, Usd::ZERO, None, Paid::Nothing, timeout).await;
        }
        let skew = first
            .headers()
            .get(hyper::header::DATE)
            .and_then(|d| crate::clock::skew_secs(d.as_bytes(), crate::now_ms()));

        // 2. Read the requirements (header for v2, small JSON body for v1).
        let pr = read_requirements(first, timeout).await?;

        // 3. Choose what to pay; the ceiling is the smaller of the wallet's and the app's.
        let app_cfg = self.app_cfg(&call.app);
        let chosen = select::choose_any(&pr, &self.policy(&app_cfg), &self.cfg.svm_policy())
            .map_err(refusal_error)?;
        let choice = match chosen {
            select::Chosen::Evm(c) => c,
            // Solana: its own branch (pay/svm.rs), same states and delivery.
            select::Chosen::Svm(c) => {
                return self.pay_svm(&call, &uri, &pr, c, &app_cfg, timeout).await;
            }
        };

        // 3b. The extensions we echo, with a payment id for this call when the seller
        //     declared payment-identifier (refused when it requires one we cannot
        //     give: nothing is signed yet).
        let payment_identifier = match x402::extensions::id_request(pr.extensions.as_deref()) {
            x402::extensions::IdRequest::Accepted { .. } => Some(random_payment_id()?),
            _ => None,
        };
        let extensions =
            x402::extensions::echo(pr.extensions.as_deref(), payment_identifier.as_deref())
                .map_err(|e| ProxyError::BadRequirements(e.to_string()))?;

        // 4. A payment's validity comes from our clock: refuse if it is far off.
        self.check_clock(skew, choice.timeout_seconds)?;

        // 5. The wallet (503 with the command to run when there is none).
        let wallet = self.wallet.get(&self.cfg.key_location()).await?;

        // 6. The authorization's parameters come first (our clock, a fresh nonce),
        //    so that reserving records them: one durable commit, the only fsync
        //    this call waits for, holds the budget and names the payment that
        //    may leave. A crash from here leaves it at risk, resolved on chain.
        let now = crate::now_ms();
        let auth = Authorization {
            from: wallet.address(),
            to: choice.pay_to,
            value: U256::from(choice.amount.atomic()),
            valid_after: 0,
            valid_before: (now / 1000) as u64 + choice.timeout_seconds,
            nonce: random_nonce()?,
        };
        let reservation = Reservation::hold_evm(
            self.ledger,
            self.metrics,
            choice.network.caip2,
            Reserve {
                now_ms: now,
                app: call.app.clone(),
                model: call.model.clone(),
                route: path_only(&call.path_and_query).to_string(),
                network: choice.network.caip2.to_string(),
                asset: choice.network.usdc.to_string(),
                pay_to: choice.pay_to.to_string(),
                amount: choice.amount,
                caps: self.caps(&app_cfg),
                auth: None,
            },
            auth.clone(),
            payment_identifier.clone(),
        )
        .await?;

        // 7. Signed, in memory: nothing more to persist before the request leaves.
        //    From here the payment must be finished, or it is at risk.
        let domain = wallet::eip3009::domain(
            choice.network.eip712_name,
            choice.network.eip712_version,
            choice.network.chain_id,
            choice.network.usdc,
        );
        let id = reservation.id();
        let (payment, signature) = reservation.sign(&wallet, &domain)?;
        let header =
            x402::header::encode_payment(&pr, &choice, &auth, &signature, extensions.as_deref());
        let amount = choice.amount;
        tracing::info!(
            id, app = %call.app, model = call.model.as_deref().unwrap_or("-"),
            %amount, network = choice.network.caip2, pay_to = %choice.pay_to,
            payment_identifier = payment_identifier.as_deref().unwrap_or("-"),
            "payment signed"
        );

        // 8. Send it; re-send the very same bytes if the answer is lost.
        let sent = Sent {
            call: &call,
            uri: &uri,
            header: (pr.version.payment_header(), header),
            id,
            amount,
            caip2: choice.network.caip2,
            valid_until: auth.valid_before,
            rail: Rail::Evm {
                auth: &auth,
                network: choice.network,
            },
            timeout,
        };
        self.deliver(&sent, payment).await
    }

    /// Sends the signed payment and records its outcome (without waiting for an
    /// fsync) as the reply goes back. When the answer is lost after the payment left (reset, timeout,
    /// 5xx), the same header is re-sent on a fresh connection: the same nonce
    /// cannot move money twice, so a re-send can only bring the paid answer back
    /// (a seller replaying by payment id, or one the first send never reached).
    async fn deliver(
        &self,
        s: &Sent<'_>,
        payment: SignedPayment<'_>,
    ) -> Result<Upstream, ProxyError> {
        let (id, amount, timeout) = (s.id, s.amount, s.timeout);
        let app = s.call.app.as_str();
        let max_sends = 1 + self.cfg.config.payment.recover_attempts;
        // Re-sends go out on their own client: a fresh connection, not the pooled
        // one the failure happened on.
        let mut fresh: Option<Client> = None;
        let mut sends = 0u32;
        // What lost the answer the first time, and the seller's last 5xx reply
        // (relayed when no re-send brings anything better).
        let mut first_error: Option<String> = None;
        let mut last_reply: Option<Upstream> = None;
        // The whole exchange, re-sends included, ends within twice the upstream
        // timeout: the app waits for this, and its payment stays unknown meanwhile.
        let deadline = tokio::time::Instant::now() + timeout * 2;
        let last_error = loop {
            sends += 1;
            let resent = sends > 1;
            let client = match (&fresh, resent) {
                (Some(c), true) => c,
                _ => self.client,
            };
            let wait = if resent {
                deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(timeout)
            } else {
                timeout
            };
            let result = self
                .send_on(client, s.call, s.uri, Some(s.header.clone()), wait)
                .await;
            let next = match result {
                Err(SendError::Connect(reason)) if !resent => {
                    // No connection was made, so the signature never left the process.
                    let why = format!("not sent: {reason}");
                    payment.finish(Outcome::Released { reason: why });
                    return Err(ProxyError::UpstreamUnreachable {
                        upstream: self.cfg.config.upstream.clone(),
                        reason,
                    });
                }
                Err(SendError::Connect(r)) => {
                    Next::Retry(format!("re-send could not connect: {r}"))
                }
                Err(SendError::Timeout) => {
                    Next::Retry(format!("no reply within {} s", wait.as_secs()))
                }
                Err(SendError::Other(r)) => Next::Retry(r),
                Err(SendError::HeadTooLarge) => {
                    Next::Stop("the reply headers were too large to read".into())
                }
                Ok(resp) if resp.status().is_success() => {
                    return self.answered(s, payment, resp, sends).await;
                }
                Ok(resp) if resp.status() == StatusCode::PAYMENT_REQUIRED && !resent => {
                    return self.refused(s, payment, resp).await;
                }
                Ok(resp) if resp.status() == StatusCode::PAYMENT_REQUIRED => {
                    // A re-send refused: did an earlier send settle? Only the chain knows.
                    let f = failure_of(resp, timeout).await;
                    let said = f.reason_or("no reason given");
                    match self.chain_check(s).await {
                        Ok(Seen::Paid { proof, tx }) => {
                            let lost = first_error.clone().unwrap_or_else(|| said.clone());
                            let note = format!(
                                "send {sends} answered 402 ({said}); {proof}: paid once, the seller lost the answer ({lost})"
                            );
                            self.note_attempt(id, sends, Some(note)).await;
                            self.metrics.resend(app, "answer_lost");
                            payment.finish(Outcome::Settled { tx: tx.clone() });
                            tracing::warn!(id, app, %amount, state = "settled", %proof, tx = tx.as_deref().unwrap_or("-"), reason = %lost, "paid once on chain, but the seller lost the answer");
                            return Err(ProxyError::PaidAnswerLost {
                                reason: lost,
                                amount: amount.to_string(),
                                proof,
                            });
                        }
                        Ok(Seen::NotYet(unused)) => {
                            let why = format!("re-send answered 402 ({said}); {unused}");
                            // "Nonce used" with an unused nonce: a settlement may be
                            // on its way; anything else will not change by asking again.
                            if x402::failure::says_nonce_used(&said) {
                                Next::Retry(why)
                            } else {
                                Next::Stop(why)
                            }
                        }
                        Err(e) => Next::Stop(format!(
                            "re-send answered 402 ({said}); the chain cannot be checked now: {e}"
                        )),
                    }
                }
                Ok(resp) if resp.status().is_server_error() => {
                    let status = resp.status();
                    if let Ok(u) = buffer(resp, amount, Some(id), Paid::AtRisk, timeout).await {
                        last_reply = Some(u);
                    }
                    Next::Retry(format!("upstream answered {status} to the paid request"))
                }
                Ok(resp) => {
                    // Any other answer after the signature left: the seller may have
                    // settled, and what it means is not ours to guess. Relayed.
                    let reason = format!("upstream answered {} to the paid request", resp.status());
                    self.note_attempt(id, sends, Some(reason.clone())).await;
                    payment.finish(Outcome::AtRisk {
                        reason: reason.clone(),
                    });
                    tracing::warn!(id, app, %amount, state = "at_risk", %reason, "payment at risk");
                    return buffer(resp, amount, Some(id), Paid::AtRisk, timeout).await;
                }
            };
            let (why, stop) = match next {
                Next::Retry(w) => (w, false),
                Next::Stop(w) => (w, true),
            };
            if resent {
                self.metrics.resend(app, "failed");
            }
            first_error.get_or_insert_with(|| why.clone());
            self.note_attempt(id, sends, Some(why.clone())).await;
            let now_s = (crate::now_ms() / 1000).max(0) as u64;
            let room = s.valid_until.saturating_sub(now_s);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if stop
                || sends >= max_sends
                || room <= RESEND_MARGIN_SECS + backoff(sends).as_secs()
                || left <= backoff(sends) + Duration::from_secs(1)
            {
                break why;
            }
            tracing::warn!(id, app, %amount, send = sends, reason = %why, "paid answer lost; re-sending the same payment");
            if fresh.is_none() {
                fresh = upstream::client().ok();
            }
            tokio::time::sleep(backoff(sends)).await;
        };

        // 9. No answer came back: the outcome is unknown until the chain says.
        let reason = match (&first_error, sends) {
            (Some(first), n) if n > 1 && *first != last_error => {
                format!(
                    "{first}; then {} re-sends of the same payment: {last_error}",
                    n - 1
                )
            }
            (_, n) if n > 1 => format!(
                "{last_error}; {} re-sends of the same payment brought no answer",
                n - 1
            ),
            _ => last_error,
        };
        payment.finish(Outcome::AtRisk {
            reason: reason.clone(),
        });
        tracing::warn!(id, app, %amount, state = "at_risk", %reason, "paid request failed; payment at risk");
        match last_reply {
            Some(u) => Ok(u),
            None => Err(ProxyError::PaymentOutcomeUnknown {
                reason,
                amount: amount.to_string(),
            }),
        }
    }

    /// A 2xx to the paid request: settled, unless the seller's own settlement
    /// report says it failed (then at risk, relayed as such).
    async fn answered(
        &self,
        s: &Sent<'_>,
        payment: SignedPayment<'_>,
        resp: Response<Incoming>,
        sends: u32,
    ) -> Result<Upstream, ProxyError> {
        let (id, amount, app) = (s.id, s.amount, s.call.app.as_str());
        let report = x402::failure::settle_response(settle_header(resp.headers()));
        if sends > 1 {
            self.metrics.resend(app, "answer");
            self.note_attempt(id, sends, None).await;
        }
        if let Some(r) = report.as_ref().filter(|r| !r.success) {
            let reason = format!(
                "the seller answered {} but says settlement failed ({})",
                resp.status(),
                r.error_reason.as_deref().unwrap_or("no reason given")
            );
            payment.finish(Outcome::AtRisk {
                reason: reason.clone(),
            });
            tracing::warn!(id, app, %amount, state = "at_risk", %reason, "payment at risk");
            return buffer(resp, amount, Some(id), Paid::AtRisk, s.timeout).await;
        }
        let tx = report.and_then(|r| r.transaction);
        payment.finish(Outcome::Settled { tx: tx.clone() });
        tracing::info!(
            id, app, model = s.call.model.as_deref().unwrap_or("-"), %amount,
            network = s.caip2, state = "settled", tx = tx.as_deref().unwrap_or("-"),
            sends, "payment settled"
        );
        buffer(resp, amount, Some(id), Paid::Settled, s.timeout).await
    }

    /// A 402 to the first send: the seller refused the payment (not settled, but
    /// counted until it expires unused), or tried to settle it and says that
    /// failed (the transaction may be on chain: at risk).
    async fn refused(
        &self,
        s: &Sent<'_>,
        payment: SignedPayment<'_>,
        resp: Response<Incoming>,
    ) -> Result<Upstream, ProxyError> {
        let (id, amount, app) = (s.id, s.amount, s.call.app.as_str());
        let f = failure_of(resp, s.timeout).await;
        let reason = f.reason_or("no reason given");
        if f.settlement_failed {
            payment.finish(Outcome::AtRisk {
                reason: format!("settlement failed: {reason}"),
            });
            tracing::warn!(id, app, %amount, state = "at_risk", %reason, "the seller says settlement failed; payment at risk");
            return Err(ProxyError::SettlementFailed {
                reason,
                amount: amount.to_string(),
            });
        }
        payment.finish(Outcome::Rejected {
            reason: reason.clone(),
        });
        tracing::warn!(id, app, %amount, state = "rejected", %reason, "seller rejected the payment");
        Err(ProxyError::PaymentRejected {
            reason,
            valid_before: s.valid_until,
        })
    }

    /// Whether the payment is on chain now, from the configured RPC.
    async fn chain_check(&self, s: &Sent<'_>) -> Result<Seen, String> {
        let (auth, network) = match &s.rail {
            Rail::Evm { auth, network } => (*auth, *network),
            Rail::Svm(svm) => {
                let check = self.chain_check_svm(svm);
                return tokio::time::timeout(CHAIN_CHECK_WAIT, check)
                    .await
                    .map_err(|_| {
                        format!(
                            "the RPC did not answer within {} s",
                            CHAIN_CHECK_WAIT.as_secs()
                        )
                    })?;
            }
        };
        let s = SentEvm { auth, network };
        let rpc = self
            .cfg
            .rpc_url(s.network)
            .ok_or_else(|| format!("no [payment.rpc] URL for {}", s.network.caip2))?;
        let check = self.resolver.check_used(
            self.client,
            &rpc,
            s.network,
            s.network.usdc,
            s.auth.from,
            s.auth.nonce,
        );
        let (used, head) = tokio::time::timeout(CHAIN_CHECK_WAIT, check)
            .await
            .map_err(|_| {
                format!(
                    "the RPC did not answer within {} s",
                    CHAIN_CHECK_WAIT.as_secs()
                )
            })??;
        Ok(match used {
            true => Seen::Paid {
                proof: format!(
                    "the chain shows the authorization used at block {}",
                    head.number
                ),
                tx: None,
            },
            false => Seen::NotYet(format!(
                "the authorization is unused on chain at block {}",
                head.number
            )),
        })
    }

    /// Records one more send of a signed payment (a failed write is logged: the
    /// count is for people, the state is what keeps money safe).
    async fn note_attempt(&self, id: u64, sends: u32, error: Option<String>) {
        if let Err(e) = self.ledger.attempt(id, sends, error, crate::now_ms()).await {
            tracing::warn!(id, error = %e, "could not record the payment's send count");
        }
    }

    fn unpaid_error(&self, e: SendError, timeout: Duration) -> ProxyError {
        match e {
            SendError::Timeout => ProxyError::UpstreamTimeout {
                secs: timeout.as_secs(),
            },
            // A reply head beyond hyper's limit (e.g. a megabyte PAYMENT-REQUIRED):
            // unusable, and retrying cannot help.
            SendError::HeadTooLarge => ProxyError::BadRequirements(
                "the upstream's reply headers are too large to read".into(),
            ),
            SendError::Connect(r) | SendError::Other(r) => ProxyError::UpstreamUnreachable {
                upstream: self.cfg.config.upstream.clone(),
                reason: r,
            },
        }
    }

    fn policy(&self, app_cfg: &AppConfig) -> select::Policy {
        let ceiling = match app_cfg.max_per_call {
            Some(a) => a.min(self.cfg.config.payment.max_per_call),
            None => self.cfg.config.payment.max_per_call,
        };
        select::Policy {
            networks: self.cfg.networks.clone(),
            ceiling,
            max_timeout_seconds: self.cfg.config.payment.max_timeout_seconds,
            pay_to: self.cfg.pay_to.clone(),
        }
    }

    /// Records the skew estimate and refuses to sign when this clock is too far
    /// off for a payment valid `timeout_secs` to be accepted.
    fn check_clock(&self, skew: Option<i64>, timeout_secs: u64) -> Result<(), ProxyError> {
        let Some(skew) = skew else { return Ok(()) };
        self.metrics.set_clock_skew(skew, crate::now_ms());
        let limit = crate::clock::limit_secs(timeout_secs);
        if skew.abs() > limit {
            tracing::error!(
                skew_secs = skew,
                limit_secs = limit,
                "{}; refusing to sign (fix NTP)",
                crate::clock::describe(skew)
            );
            return Err(ProxyError::ClockSkew { skew, limit });
        }
        if skew.abs() >= crate::clock::WARN_SECS {
            tracing::warn!(
                skew_secs = skew,
                "{} (per its Date header); check NTP",
                crate::clock::describe(skew)
            );
        }
        Ok(())
    }

    fn app_cfg(&self, app: &str) -> AppConfig {
        self.cfg.apps.get(app).cloned().unwrap_or_default()
    }

    fn caps(&self, app: &AppConfig) -> Caps {
        Caps {
            app_per_call: app.max_per_call,
            app_daily: app.daily,
            app_monthly: app.monthly,
            app_total: app.total,
            wallet_daily: self.cfg.config.limits.daily,
            wallet_monthly: self.cfg.config.limits.monthly,
        }
    }

    fn upstream_uri(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        self.cfg
            .upstream_url(path_and_query)
            .parse()
            .map_err(|_| ProxyError::Internal("cannot build the upstream URL".into()))
    }

    async fn send(
        &self,
        call: &Call,
        uri: &Uri,
        payment: Option<(&'static str, String)>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        self.send_on(self.client, call, uri, payment, timeout).await
    }

    async fn send_on(
        &self,
        client: &Client,
        call: &Call,
        uri: &Uri,
        payment: Option<(&'static str, String)>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(uri.clone())
            .body(Full::new(call.body.clone()))
            .map_err(|e| SendError::Other(e.to_string()))?;
        let h = req.headers_mut();
        for (k, v) in call.headers.iter() {
            if forwardable(k) {
                h.append(k.clone(), v.clone());
            }
        }
        upstream::strip_hop_by_hop(h);
        if let Some((name, value)) = payment {
            let v = HeaderValue::from_str(&value).map_err(|e| SendError::Other(e.to_string()))?;
            h.insert(HeaderName::from_static(name), v);
        }
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(timeout, client.request(req)).await;
        let took = started.elapsed();
        self.metrics.upstream_seconds.observe(took.as_secs_f64());
        self.upstream_us.fetch_add(
            took.as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        match res {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect(describe_client_error(&e))),
            Ok(Err(e)) if head_too_large(&e) => Err(SendError::HeadTooLarge),
            Ok(Err(e)) => Err(SendError::Other(describe_client_error(&e))),
        }
    }
}

/// The requirements of an unpaid 402. A v2 header carries them, so its body is
/// only drained briefly (a stalled body must not delay the payment past the
/// app's patience); a v1 body is read within the upstream timeout.
pub async fn read_requirements(
    resp: Response<Incoming>,
    timeout: Duration,
) -> Result<x402::PaymentRequired, ProxyError> {
    let (parts, body) = resp.into_parts();
    let header = parts
        .headers
        .get(x402::HDR_PAYMENT_REQUIRED)
        .map(|v| v.as_bytes().to_vec());
    let body = match header {
        // Unused beside a header; an oversized, stalled or broken one is dropped.
        Some(_) => read_limited(body, parse::MAX_REQUIREMENTS_BYTES, IGNORED_BODY_WAIT)
            .await
            .unwrap_or_default(),
        None => read_limited(body, parse::MAX_REQUIREMENTS_BYTES, timeout)
            .await
            .map_err(ProxyError::BadRequirements)?,
    };
    parse::parse_402(header.as_deref(), &body)
        .map_err(|e| ProxyError::BadRequirements(e.to_string()))
}

/// The settlement report header on a paid reply (v2, else v1), raw.
fn settle_header(h: &HeaderMap) -> Option<&[u8]> {
    h.get(x402::HDR_PAYMENT_RESPONSE)
        .or_else(|| h.get(x402::HDR_X_PAYMENT_RESPONSE))
        .map(|v| v.as_bytes())
}

/// What the seller said in its refusal of a paid request (see `x402::failure`).
async fn failure_of(resp: Response<Incoming>, timeout: Duration) -> x402::failure::Failure {
    let (parts, body) = resp.into_parts();
    let body = read_limited(body, parse::MAX_REQUIREMENTS_BYTES, timeout)
        .await
        .unwrap_or_default();
    x402::failure::failure(
        settle_header(&parts.headers),
        parts
            .headers
            .get(x402::HDR_PAYMENT_REQUIRED)
            .map(|h| h.as_bytes()),
        &body,
    )
}

/// The signed payment as sent, for re-sends and the outcome.
struct Sent<'a> {
    call: &'a Call,
    uri: &'a Uri,
    /// Header name and value: re-sent byte for byte, never re-signed.
    header: (&'static str, String),
    id: u64,
    amount: Usd,
    /// CAIP-2 id of the network paid on.
    caip2: &'static str,
    /// Unix seconds until which the payment can still be settled: EVM
    /// `validBefore`; Solana, an estimate of its blockhash's expiry. Re-sends stop
    /// short of it.
    valid_until: u64,
    rail: Rail<'a>,
    timeout: Duration,
}

/// What was signed, per kind of network (for the chain check).
enum Rail<'a> {
    Evm {
        auth: &'a Authorization,
        network: &'static x402::Network,
    },
    Svm(&'a svm::SvmSent),
}

/// What the chain shows about a sent payment (asked when a re-send is refused),
/// worded for its kind of network.
enum Seen {
    /// Paid once: the proof in words, and the transaction when the chain names it.
    Paid { proof: String, tx: Option<String> },
    /// Not on chain (yet): where it was looked for. Never a reason to release.
    NotYet(String),
}

/// The EVM fields `chain_check` reads.
struct SentEvm<'a> {
    auth: &'a Authorization,
    network: &'static x402::Network,
}

/// After a send that did not bring the answer: try again, or stop.
enum Next {
    Retry(String),
    Stop(String),
}

enum SendError {
    Connect(String),
    Timeout,
    HeadTooLarge,
    Other(String),
}

/// Whether hyper refused the reply because its head exceeded the size limit.
fn head_too_large(e: &hyper_util::client::legacy::Error) -> bool {
    use std::error::Error as _;
    let mut src = e.source();
    while let Some(inner) = src {
        if inner
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse_too_large())
        {
            return true;
        }
        src = inner.source();
    }
    false
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Request headers that go upstream: not the app's key, not hop-by-hop, not
/// anything the proxy sets itself.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization"
            | "host"
            | "content-length"
            | "accept-encoding"
            | "cookie"
            | "origin"
            | "referer"
            | "payment-signature"
            | "x-payment"
            | "idempotency-key"
            | "x-api-key"
    ) && !name.as_str().starts_with("x-x402d-")
}

fn path_only(pq: &str) -> &str {
    pq.split('?').next().unwrap_or(pq)
}

/// A payment-identifier id for one logical call (see `x402::extensions`).
fn random_payment_id() -> Result<String, ProxyError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| ProxyError::Internal(format!("no randomness: {e}")))?;
    Ok(x402::extensions::payment_id(&b))
}

fn random_nonce() -> Result<B256, ProxyError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| ProxyError::Internal(format!("no randomness: {e}")))?;
    Ok(B256::from(b))
}

fn refusal_error(refusals: Vec<Refusal>) -> ProxyError {
    let list = refusals
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if !refusals.is_empty() && refusals.iter().all(|r| r.over_ceiling) {
        ProxyError::PriceAboveCeiling(list)
    } else {
        ProxyError::NoAcceptableOption(list)
    }
}

/// Reads at most `limit` bytes of a body.
async fn read_limited(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, String> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err("timed out reading the 402 body".into()),
        Ok(Err(e)) => Err(format!("cannot read the 402 body: {e}")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Largest upstream reply relayed (completions are JSON, never streamed upstream).
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// An upstream reply, fully read: what the app gets, byte for byte, plus what it cost.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub paid: Paid,
}

impl Upstream {
    /// The reply as the app gets it: same status, headers (minus hop-by-hop),
    /// same body bytes, plus the cost headers.
    pub fn into_response(self) -> Response<Body> {
        let mut r = Response::new(
            Full::new(self.body)
                .map_err(|never| -> BoxError { match never {} })
                .boxed(),
        );
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }
}

/// Reads the whole reply and stamps the proxy's headers on it.
async fn buffer(
    resp: Response<Incoming>,
    cost: Usd,
    id: Option<u64>,
    paid: Paid,
    timeout: Duration,
) -> Result<Upstream, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    upstream::strip_hop_by_hop(&mut parts.headers);
    // The proxy's own headers say what x402d did; an upstream must not be able to
    // forge them (e.g. "cost 0, settled, retry" on a reply whose payment is at risk).
    strip_proxy_headers(&mut parts.headers);
    // The body is re-framed by our server (content-length of the bytes we hold).
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    let h = &mut parts.headers;
    if let Ok(v) = HeaderValue::from_str(&cost.to_string()) {
        h.insert(HDR_COST, v);
    }
    if let Some(id) = id
        && let Ok(v) = HeaderValue::from_str(&id.to_string())
    {
        h.insert(HDR_PAYMENT_ID, v);
    }
    match paid {
        Paid::Nothing => {}
        Paid::Settled => {
            h.insert(HDR_PAYMENT_STATE, HeaderValue::from_static("settled"));
        }
        Paid::AtRisk => {
            h.insert(HDR_PAYMENT_STATE, HeaderValue::from_static("at_risk"));
            h.insert(HDR_SHOULD_RETRY, HeaderValue::from_static("false"));
        }
    }
    let body = match tokio::time::timeout(timeout, Limited::new(body, MAX_RESPONSE).collect()).await
    {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            return Err(ProxyError::UpstreamBody {
                paid: paid != Paid::Nothing,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(ProxyError::UpstreamBody {
                paid: paid != Paid::Nothing,
                reason: format!("no complete reply within {} s", timeout.as_secs()),
            });
        }
    };
    Ok(Upstream {
        status: parts.status,
        headers: parts.headers,
        body,
        paid,
    })
}

/// Removes every header the proxy sets itself (`x-x402d-*`, `x-should-retry`).
fn strip_proxy_headers(h: &mut HeaderMap) {
    let ours: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-x402d-") || k.as_str() == HDR_SHOULD_RETRY)
        .cloned()
        .collect();
    for k in ours {
        h.remove(k);
    }
}

/// Shared handle type for the flow's dependencies.
pub type SharedWallet = Arc<WalletSlot>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Payment, State};
    use crate::metrics::Metrics;
    use jiff::tz::TimeZone;
    use std::future::Future;
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Context;

    /// anvil dev key #1: a public test key, never funded on a real chain.
    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    fn tmp() -> PathBuf {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let d = std::env::temp_dir().join(format!("x402d-pay-{}", hex::encode(b)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn reserve(now: i64) -> Reserve {
        Reserve {
            now_ms: now,
            app: "default".into(),
            model: None,
            route: "/v1/chat/completions".into(),
            network: "eip155:84532".into(),
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
            amount: Usd(1000),
            caps: Caps::default(),
            auth: None,
        }
    }

    fn states(l: &Ledger) -> Vec<State> {
        l.payments_now(None, 1000)
            .unwrap()
            .iter()
            .map(|p: &Payment| p.state)
            .collect()
    }

    /// Waits (bounded, generous) until no record is reserved or signed.
    async fn settled_states(l: &Ledger) -> Vec<State> {
        for _ in 0..2000 {
            let s = states(l);
            if !s
                .iter()
                .any(|s| matches!(s, State::Reserved | State::Signed))
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("records left open: {:?}", states(l));
    }

    fn auth(w: &Wallet) -> Authorization {
        Authorization {
            from: w.address(),
            to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
                .parse()
                .unwrap(),
            value: U256::from(1000),
            valid_after: 0,
            valid_before: 4_000_000_000,
            nonce: B256::repeat_byte(1),
        }
    }

    fn domain() -> alloy_sol_types::Eip712Domain {
        let n = crate::x402::networks::lookup("eip155:84532").unwrap();
        wallet::eip3009::domain(n.eip712_name, n.eip712_version, n.chain_id, n.usdc)
    }

    #[test]
    fn re_send_backoff_doubles_to_a_cap() {
        let ms: Vec<u128> = (1..=7).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(backoff(0).as_millis(), 250);
    }

    /// Holds a reservation for `auth(w)`.
    async fn hold<'l>(l: &'l Ledger, m: &'l Metrics, w: &Wallet) -> Reservation<'l, Authorization> {
        Reservation::hold_evm(
            l,
            m,
            "eip155:84532",
            reserve(crate::now_ms()),
            auth(w),
            Some("pay_1".into()),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_reservation_is_signed_for_in_one_durable_commit_before_any_signature() {
        let (l, _) = Ledger::open(&tmp().join("l.redb"), TimeZone::UTC, 0).unwrap();
        let m = Metrics::new();
        let w = Wallet::from_hex(KEY).unwrap();
        let before = l.stats();
        let r = hold(&l, &m, &w).await;
        let after = l.stats();
        assert_eq!(after.durable_commits - before.durable_commits, 1);
        // The record already names the authorization that may leave.
        let p = &l.payments_now(None, 1).unwrap()[0];
        assert_eq!(p.state, State::Signed);
        assert_eq!(p.nonce, Some(B256::repeat_byte(1).to_string()));
        assert_eq!(p.valid_before, Some(4_000_000_000));
        assert_eq!(p.payer, Some(w.address().to_string()));
        assert_eq!(p.payment_identifier.as_deref(), Some("pay_1"));
        // Signing writes nothing.
        let (signed, _sig) = r.sign(&w, &domain()).unwrap();
        assert_eq!(l.stats().durable_commits, after.durable_commits);
        signed.finish(Outcome::Settled { tx: None });
        l.payments(None, 1).await.unwrap();
        let end = l.stats();
        assert_eq!(
            end.durable_commits, after.durable_commits,
            "the outcome waits for no fsync"
        );
        assert_eq!(end.non_durable_commits - before.non_durable_commits, 1);
        assert_eq!(states(&l), [State::Settled]);
    }

    #[tokio::test]
    async fn a_dropped_reservation_releases_itself() {
        let (l, _) = Ledger::open(&tmp().join("l.redb"), TimeZone::UTC, 0).unwrap();
        let m = Metrics::new();
        let w = Wallet::from_hex(KEY).unwrap();
        let r = hold(&l, &m, &w).await;
        // Signed-for (at risk if the process died now), but nothing was signed.
        assert_eq!(states(&l), [State::Signed]);
        drop(r);
        assert_eq!(settled_states(&l).await, [State::Released]);
    }

    #[tokio::test]
    async fn a_dropped_signed_payment_is_at_risk_never_released() {
        let (l, _) = Ledger::open(&tmp().join("l.redb"), TimeZone::UTC, 0).unwrap();
        let m = Metrics::new();
        let w = Wallet::from_hex(KEY).unwrap();
        let r = hold(&l, &m, &w).await;
        let (signed, _sig) = r.sign(&w, &domain()).unwrap();
        drop(signed);
        assert_eq!(settled_states(&l).await, [State::AtRisk]);
    }

    #[tokio::test]
    async fn a_finished_payment_is_not_touched_by_drop() {
        let (l, _) = Ledger::open(&tmp().join("l.redb"), TimeZone::UTC, 0).unwrap();
        let m = Metrics::new();
        let w = Wallet::from_hex(KEY).unwrap();
        let (signed, _) = hold(&l, &m, &w).await.sign(&w, &domain()).unwrap();
        signed.finish(Outcome::Settled { tx: None });
        hold(&l, &m, &w).await.release("test");
        assert_eq!(settled_states(&l).await, [State::Released, State::Settled]);
    }

    /// A seller that answers unpaid requests with a v2 402 and paid ones with
    /// 200; at each paid request it notes the ledger's durable commits and the
    /// last record (what was on disk when the payment arrived).
    async fn instant_seller(
        ledger: Ledger,
    ) -> (
        std::net::SocketAddr,
        Arc<std::sync::Mutex<Vec<(u64, Payment, String)>>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let (s3, l3) = (s2.clone(), ledger.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s4, l4) = (s3.clone(), l3.clone());
                        async move {
                            if let Some(h) = req.headers().get(x402::HDR_PAYMENT_SIGNATURE) {
                                let last = l4.payments_now(None, 1).unwrap().remove(0);
                                let header = h.to_str().unwrap().to_string();
                                s4.lock()
                                    .unwrap()
                                    .push((l4.stats().durable_commits, last, header));
                                return Response::builder()
                                    .status(200)
                                    .body(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                            }
                            Response::builder()
                                .status(402)
                                .header(
                                    x402::HDR_PAYMENT_REQUIRED,
                                    x402::parse::tests_support::V2_HEADER,
                                )
                                .body(Full::new(Bytes::from_static(b"{}")))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    /// The paid call's critical path waits for exactly one fsync, its
    /// reservation, which is on disk with the nonce before the payment leaves;
    /// the outcome commits without one. Counted, not timed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paid_call_waits_for_one_durable_commit_made_before_the_payment_left() {
        let dir = tmp();
        let (ledger, _) = Ledger::open(&dir.join("l.redb"), TimeZone::UTC, 0).unwrap();
        let (addr, seen) = instant_seller(ledger.clone()).await;
        let cfg = crate::config::parse(
            &format!(
                "upstream = \"http://{addr}\"\nstate_dir = \"{}\"\n[payment]\nnetworks = [\"eip155:84532\"]\n",
                dir.display()
            ),
            None,
        )
        .unwrap();
        let client = crate::upstream::client().unwrap();
        let slot = WalletSlot::loaded(Wallet::from_hex(KEY).unwrap());
        let metrics = Metrics::new();
        let payer = Payer {
            cfg: &cfg,
            client: &client,
            ledger: &ledger,
            wallet: &slot,
            metrics: &metrics,
            resolver: &crate::chain::Resolver::default(),
            upstream_us: Default::default(),
        };
        for n in 1..=3u64 {
            let before = ledger.stats();
            let up = payer
                .run(Call {
                    app: "default".into(),
                    model: None,
                    method: Method::POST,
                    path_and_query: "/v1/chat/completions".into(),
                    headers: HeaderMap::new(),
                    body: Bytes::from_static(b"{}"),
                })
                .await
                .unwrap();
            assert_eq!(up.paid, Paid::Settled);
            let answered = ledger.stats();
            assert_eq!(
                answered.durable_commits - before.durable_commits,
                1,
                "call {n}: durable commits on the critical path"
            );
            let (durable_then, on_disk, header) = seen.lock().unwrap().last().cloned().unwrap();
            assert_eq!(
                durable_then,
                before.durable_commits + 1,
                "committed before it left"
            );
            assert_eq!(on_disk.state, State::Signed);
            let nonce = on_disk.nonce.clone().unwrap();
            let doc = String::from_utf8(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &header)
                    .unwrap(),
            )
            .unwrap();
            assert!(doc.contains(&nonce), "the nonce on disk is the one sent");
            // The outcome follows, committed without an fsync.
            let p = &ledger.payments(None, 1).await.unwrap()[0];
            assert_eq!((p.id, p.state), (on_disk.id, State::Settled));
            let end = ledger.stats();
            assert_eq!(end.durable_commits, answered.durable_commits);
            assert_eq!(end.non_durable_commits - before.non_durable_commits, 1);
        }
    }

    // --- Payer::run cancelled at each point ---------------------------------

    /// A seller whose unpaid requests get a v2 402 and whose paid requests stall
    /// forever; counts the paid requests that arrived.
    async fn stalling_seller() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paid = Arc::new(AtomicUsize::new(0));
        let p2 = paid.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let p3 = p2.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let p4 = p3.clone();
                        async move {
                            if req.headers().contains_key(x402::HDR_PAYMENT_SIGNATURE) {
                                p4.fetch_add(1, Ordering::SeqCst);
                                std::future::pending::<()>().await;
                            }
                            Response::builder()
                                .status(402)
                                .header(
                                    x402::HDR_PAYMENT_REQUIRED,
                                    x402::parse::tests_support::V2_HEADER,
                                )
                                .body(Full::new(Bytes::from_static(b"{}")))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, paid)
    }

    /// Polls `fut` until `stop()` holds before a poll, then drops it (a cancelled
    /// flow: a hung-up connection, a shutdown, an aborted task).
    async fn cancel_when<F: Future>(fut: F, mut stop: impl FnMut() -> bool) {
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..20_000 {
            if stop() {
                return;
            }
            if Pin::as_mut(&mut fut).poll(&mut cx).is_ready() {
                panic!("the flow finished before the cancel point");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("cancel point never reached");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_flow_leaves_nothing_reserved_or_signed() {
        let (addr, paid) = stalling_seller().await;
        let dir = tmp();
        let cfg = crate::config::parse(
            &format!(
                "upstream = \"http://{addr}\"\nstate_dir = \"{}\"\n[payment]\nnetworks = [\"eip155:84532\"]\n",
                dir.display()
            ),
            None,
        )
        .unwrap();
        let client = crate::upstream::client().unwrap();
        let (ledger, _) = Ledger::open(&dir.join("l.redb"), TimeZone::UTC, 0).unwrap();
        let slot = WalletSlot::loaded(Wallet::from_hex(KEY).unwrap());
        let metrics = Metrics::new();
        let payer = Payer {
            cfg: &cfg,
            client: &client,
            ledger: &ledger,
            wallet: &slot,
            metrics: &metrics,
            resolver: &crate::chain::Resolver::default(),
            upstream_us: Default::default(),
        };
        let call = || Call {
            app: "default".into(),
            model: None,
            method: Method::POST,
            path_and_query: "/v1/chat/completions".into(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"{}"),
        };
        let last = |l: &Ledger| l.payments_now(None, 1).unwrap().first().map(|p| p.state);

        // Cancelled once budget is held (with the authorization's parameters, so
        // the record is signed-for) but before the flow read the answer: released.
        cancel_when(payer.run(call()), || last(&ledger).is_some()).await;
        assert_eq!(settled_states(&ledger).await, [State::Released]);

        // The same point again, normally before anything is sent: released. (If the flow slipped past the check and the request started to
        // leave, at-risk is the right answer; released with a payment never is.)
        cancel_when(payer.run(call()), || last(&ledger) == Some(State::Signed)).await;
        let s = settled_states(&ledger).await;
        assert!(matches!(s[0], State::Released | State::AtRisk), "{s:?}");
        if s[0] == State::Released {
            assert_eq!(paid.load(Ordering::SeqCst), 0, "released but paid");
        }
        let before = paid.load(Ordering::SeqCst);

        // Cancelled after the seller got the payment: at risk, never released.
        cancel_when(payer.run(call()), || {
            paid.load(Ordering::SeqCst) == before + 1
        })
        .await;
        let s = settled_states(&ledger).await;
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], State::AtRisk);
    }
}
