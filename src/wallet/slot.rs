//! The daemon's key in use. Loaded lazily (so `x402d wallet import` works
//! without a restart) and re-read on `reload()`: the CLI calls it over the
//! admin socket after every `wallet new/import/remove`, and `x402d reload`
//! does too, so a rotated or removed key stops paying on the very next call.

use super::solana::SolanaWallet;
use super::{KeyLocation, Wallet, WalletError};
use crate::error::ProxyError;
use tokio::sync::Mutex;

#[derive(Default)]
pub struct WalletSlot {
    cached: Mutex<Option<Wallet>>,
    /// The Solana key, its own entry beside the EVM key's (see `solana`).
    solana: Mutex<Option<SolanaWallet>>,
}

impl WalletSlot {
    /// A slot that already holds `w` (embedders and tests that have the key in hand).
    pub fn loaded(w: Wallet) -> Self {
        WalletSlot {
            cached: Mutex::new(Some(w)),
            solana: Mutex::new(None),
        }
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// The key in use, loading it from the store when none is.
    pub async fn get(&self, loc: &KeyLocation) -> Result<Wallet, ProxyError> {
        let mut slot = self.cached.lock().await;
        if let Some(w) = slot.as_ref() {
            return Ok(w.clone());
        }
        let w = load(loc).await.map_err(to_proxy)?;
        tracing::info!(address = %w.address(), "wallet loaded");
        *slot = Some(w.clone());
        Ok(w)
    }

    /// The Solana key in use, loading it from the store when none is.
    pub async fn get_solana(&self, loc: &KeyLocation) -> Result<SolanaWallet, ProxyError> {
        let mut slot = self.solana.lock().await;
        if let Some(w) = slot.as_ref() {
            return Ok(w.clone());
        }
        let w = load_solana(loc).await.map_err(to_proxy)?;
        tracing::info!(address = %w.address(), "Solana wallet loaded");
        *slot = Some(w.clone());
        Ok(w)
    }

    /// `reload` for the Solana key: `Ok(None)` when there is none.
    pub async fn reload_solana(
        &self,
        loc: &KeyLocation,
    ) -> Result<Option<SolanaWallet>, WalletError> {
        let mut slot = self.solana.lock().await;
        let old = slot.take().map(|w| w.address());
        let r = match load_solana(loc).await {
            Ok(w) => {
                *slot = Some(w.clone());
                Ok(Some(w))
            }
            Err(WalletError::MissingSolana { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        let new = slot.as_ref().map(|w| w.address());
        if old != new {
            match (old, new) {
                (_, Some(n)) => tracing::info!(address = %n, "Solana wallet key changed"),
                (Some(_), None) => {
                    tracing::warn!("Solana wallet key gone: Solana payments get 503")
                }
                (None, None) => {}
            }
        }
        r
    }

    /// Drops the key in use and reads the store again. On any failure the slot
    /// stays empty: a key the user removed or rotated is never kept signing.
    pub async fn reload(&self, loc: &KeyLocation) -> Result<Option<Wallet>, WalletError> {
        let mut slot = self.cached.lock().await;
        let old = slot.take().map(|w| w.address());
        let r = match load(loc).await {
            Ok(w) => {
                *slot = Some(w.clone());
                Ok(Some(w))
            }
            Err(WalletError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        let new = slot.as_ref().map(|w| w.address());
        if old != new {
            match (old, new) {
                (_, Some(n)) => tracing::info!(address = %n, "wallet key changed"),
                (Some(_), None) => tracing::warn!("wallet key gone: paid calls get 503"),
                (None, None) => {}
            }
        }
        r
    }
}

async fn load(loc: &KeyLocation) -> Result<Wallet, WalletError> {
    let loc = loc.clone();
    tokio::task::spawn_blocking(move || super::load(&loc))
        .await
        .map_err(|e| WalletError::Keyring(format!("wallet task: {e}")))?
}

async fn load_solana(loc: &KeyLocation) -> Result<SolanaWallet, WalletError> {
    let loc = loc.clone();
    tokio::task::spawn_blocking(move || super::solana::load(&loc))
        .await
        .map_err(|e| WalletError::Keyring(format!("wallet task: {e}")))?
}

fn to_proxy(e: WalletError) -> ProxyError {
    match e {
        e @ (WalletError::Missing { .. } | WalletError::MissingSolana { .. }) => {
            ProxyError::WalletNotConfigured(e.to_string())
        }
        e => ProxyError::Wallet(e.to_string()),
    }
}
