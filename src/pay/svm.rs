//! The Solana branch of the payment flow: after `select::choose_any` picked a
//! Solana option. Same states, same ledger and caps, same delivery and re-send
//! of the very same bytes as the EVM flow; what differs is what gets signed:
//!
//! ```text
//! blockhash + lastValidBlockHeight from [payment.rpc]   (RPC down: nothing reserved)
//! memo = extra.memo, else 16 random bytes hex
//! Reserved  (caps checked, budget held, durable)
//! Signed    (transaction built by x402::svm and signed once; payer, memo and
//!            lastValidBlockHeight durable BEFORE sending)
//! send ... exactly as `deliver` does for EVM
//! ```
//!
//! In the ledger a Solana payment keeps `payer` = the wallet's base58 address,
//! `nonce` = the memo (how the resolver finds it on chain) and `valid_before` =
//! the blockhash's lastValidBlockHeight: a **block height**, not unix seconds.

use super::{Payer, Rail, Reservation, Seen, Sent, Upstream, path_only, random_payment_id};
use crate::chain::solana::{self as chain_svm, Wanted};
use crate::config::AppConfig;
use crate::error::ProxyError;
use crate::ledger::Reserve;

use crate::x402::svm;
use crate::x402::{self, PaymentRequired, select::SvmChoice};
use hyper::Uri;
use std::time::Duration;

/// The longest wait for the blockhash before refusing (nothing is signed yet).
const BLOCKHASH_WAIT: Duration = Duration::from_secs(10);
/// How long a blockhash stays usable, roughly (150 blocks of ~400 ms): the
/// window for re-sends and the "expires at" in a rejection.
const BLOCKHASH_LIFETIME_SECS: u64 = 60;

/// What the delivery of a Solana payment needs beside the common fields.
pub(super) struct SvmSent {
    pub network: &'static x402::networks::SvmNetwork,
    pub wanted: Wanted,
}

impl Payer<'_> {
    /// Pays a Solana requirement (see the module notes).
    pub(super) async fn pay_svm(
        &self,
        call: &super::Call,
        uri: &Uri,
        pr: &PaymentRequired,
        choice: SvmChoice,
        app_cfg: &AppConfig,
        timeout: Duration,
    ) -> Result<Upstream, ProxyError> {
        let net = choice.network;
        let payment_identifier = match x402::extensions::id_request(pr.extensions.as_deref()) {
            x402::extensions::IdRequest::Accepted { .. } => Some(random_payment_id()?),
            _ => None,
        };
        let extensions =
            x402::extensions::echo(pr.extensions.as_deref(), payment_identifier.as_deref())
                .map_err(|e| ProxyError::BadRequirements(e.to_string()))?;

        // The wallet (503 with the command to run when there is none).
        let wallet = self.wallet.get_solana(&self.cfg.key_location()).await?;
        let payer = wallet.address();

        // The memo, and a dry run of the instructions: a fee payer in any of them
        // (e.g. the wallet itself) is refused before anything is held or signed.
        let memo = svm::memo_text(&choice.terms, random16()?);
        svm::instructions(
            &payer,
            &choice.terms,
            &memo,
            svm::COMPUTE_UNIT_PRICE_MICROLAMPORTS,
        )
        .map_err(|e| {
            ProxyError::NoAcceptableOption(format!(
                "exact on {} to {}: {e}",
                net.caip2, choice.terms.pay_to
            ))
        })?;

        // A recent blockhash from our own RPC (never the seller's: its
        // lastValidBlockHeight is what later proves the payment expired).
        let blockhash = self.blockhash(net).await?;

        // Reserved.
        let now = crate::now_ms();
        let recorded = crate::ledger::Auth {
            payer: payer.to_base58(),
            nonce: memo.clone(),
            valid_before: blockhash.last_valid_block_height,
            payment_identifier: payment_identifier.clone(),
        };
        let reservation = Reservation::hold(
            self.ledger,
            self.metrics,
            net.caip2,
            Reserve {
                now_ms: now,
                app: call.app.clone(),
                model: call.model.clone(),
                route: path_only(&call.path_and_query).to_string(),
                network: net.caip2.to_string(),
                asset: net.usdc_mint.to_string(),
                pay_to: choice.terms.pay_to.to_base58(),
                amount: choice.amount,
                caps: self.caps(app_cfg),
                auth: None,
            },
            recorded,
            Transfer {
                terms: &choice.terms,
                blockhash: &blockhash,
                memo,
            },
        )
        .await?;
        let id = reservation.id();

        // Signed: built and signed once, in memory (payer, memo and
        // lastValidBlockHeight are already durable with the reservation).
        let (payment, signed) = reservation.sign_with(|t| {
            svm::build(
                &payer,
                |m| wallet.sign(m),
                t.terms,
                &t.blockhash.hash,
                t.memo.clone(),
            )
            .map_err(|e| ProxyError::NoAcceptableOption(e.to_string()))
        })?;
        let header = x402::header::encode_svm_payment(
            pr,
            &choice.requirement,
            &signed.base64(),
            extensions.as_deref(),
        );
        tracing::info!(
            id, app = %call.app, model = call.model.as_deref().unwrap_or("-"),
            amount = %choice.amount, network = net.caip2, pay_to = %choice.terms.pay_to,
            last_valid_block_height = blockhash.last_valid_block_height,
            payment_identifier = payment_identifier.as_deref().unwrap_or("-"),
            "Solana payment signed"
        );

        let wanted = Wanted {
            source: svm::associated_token_account(&payer, &choice.terms.mint)
                .ok_or_else(|| ProxyError::Internal("no token account address".into()))?,
            destination: svm::associated_token_account(&choice.terms.pay_to, &choice.terms.mint)
                .ok_or_else(|| ProxyError::Internal("no token account address".into()))?,
            mint: choice.terms.mint,
            amount: choice.terms.amount,
            memo: signed.memo.clone(),
            since_s: now / 1000,
        };
        let svm_sent = SvmSent {
            network: net,
            wanted,
        };
        let sent = Sent {
            call,
            uri,
            header: (pr.version.payment_header(), header),
            id,
            amount: choice.amount,
            caip2: net.caip2,
            valid_until: (now / 1000).max(0) as u64 + BLOCKHASH_LIFETIME_SECS,
            rail: Rail::Svm(&svm_sent),
            timeout,
        };
        self.deliver(&sent, payment).await
    }

    async fn blockhash(
        &self,
        net: &x402::networks::SvmNetwork,
    ) -> Result<chain_svm::Blockhash, ProxyError> {
        let unreachable = |reason: String| ProxyError::ChainUnreachable {
            network: net.caip2.to_string(),
            reason,
        };
        let rpc = self
            .cfg
            .svm_rpc_url(net)
            .ok_or_else(|| unreachable("no [payment.rpc] URL for it".into()))?;
        match tokio::time::timeout(
            BLOCKHASH_WAIT,
            chain_svm::latest_blockhash(self.client, &rpc),
        )
        .await
        {
            Err(_) => Err(unreachable(format!(
                "no blockhash within {} s",
                BLOCKHASH_WAIT.as_secs()
            ))),
            Ok(Err(e)) => Err(unreachable(e)),
            Ok(Ok(b)) => Ok(b),
        }
    }

    /// Whether the Solana payment is on chain now (asked when a re-send is
    /// refused, seconds after the first send): searched at `confirmed`, so a
    /// transfer that just landed is found. A miss releases nothing (only the
    /// resolver does, finalized, once the blockhash expired).
    pub(super) async fn chain_check_svm(&self, s: &SvmSent) -> Result<Seen, String> {
        let rpc = self
            .cfg
            .svm_rpc_url(s.network)
            .ok_or_else(|| format!("no [payment.rpc] URL for {}", s.network.caip2))?;
        let (found, height) = self
            .resolver
            .check_paid_svm(self.client, &rpc, s.network, &s.wanted)
            .await?;
        Ok(match found {
            Some(f) => Seen::Paid {
                proof: format!("memo found in {f}"),
                tx: Some(f.signature),
            },
            None => Seen::NotYet(format!(
                "no transfer with its memo on chain yet (confirmed; finalized block height {height})"
            )),
        })
    }
}

/// What a Solana reservation signs: the transfer's inputs, fixed before reserving.
struct Transfer<'a> {
    terms: &'a svm::Terms,
    blockhash: &'a chain_svm::Blockhash,
    memo: String,
}

fn random16() -> Result<[u8; 16], ProxyError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| ProxyError::Internal(format!("no randomness: {e}")))?;
    Ok(b)
}
