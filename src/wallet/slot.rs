//! The daemon's key in use. Loaded lazily (so `x402d wallet import` works
//! without a restart) and re-read on `reload()`: the CLI calls it over the
//! admin socket after every `wallet new/import/remove`, and `x402d reload`
//! does too, so a rotated or removed key stops paying on the very next call.
//!
//! A paid call only reads the slot: a shared read of a `std` lock held for one
//! `Arc` clone, never an await and never a queue behind other calls. Loads
//! (the first call, reloads) take a separate async lock, so two loads never
//! race and a slow keyring never blocks the readers of a loaded key.

use super::solana::SolanaWallet;
use super::{KeyLocation, Wallet, WalletError};
use crate::error::ProxyError;
use std::sync::RwLock;

/// One key in use: read without waiting, loaded under its own async lock.
struct Held<W> {
    /// The key in use. Written only while `loading` is held.
    current: RwLock<Option<W>>,
    /// Serializes loads from the store (first use, reload).
    loading: tokio::sync::Mutex<()>,
}

impl<W> Default for Held<W> {
    fn default() -> Self {
        Held {
            current: RwLock::new(None),
            loading: Default::default(),
        }
    }
}

impl<W: Clone> Held<W> {
    fn peek(&self) -> Option<W> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, w: Option<W>) -> Option<W> {
        match self.current.write() {
            Ok(mut g) => std::mem::replace(&mut *g, w),
            Err(p) => std::mem::replace(&mut *p.into_inner(), w),
        }
    }

    /// The key in use, loading it with `load` when none is.
    async fn get<F>(&self, load: impl FnOnce() -> F) -> Result<(W, bool), WalletError>
    where
        F: std::future::Future<Output = Result<W, WalletError>>,
    {
        if let Some(w) = self.peek() {
            return Ok((w, false));
        }
        let _loading = self.loading.lock().await;
        // Another call may have loaded it while this one waited.
        if let Some(w) = self.peek() {
            return Ok((w, false));
        }
        let w = load().await?;
        self.set(Some(w.clone()));
        Ok((w, true))
    }

    /// Empties the slot, then loads again: `(old, result)`. A call that reads the
    /// slot meanwhile waits for this load (through `get`) rather than signing
    /// with the old key; on any failure the slot stays empty.
    async fn reload<F>(&self, load: impl FnOnce() -> F) -> (Option<W>, Result<W, WalletError>)
    where
        F: std::future::Future<Output = Result<W, WalletError>>,
    {
        let _loading = self.loading.lock().await;
        let old = self.set(None);
        let r = load().await;
        if let Ok(w) = &r {
            self.set(Some(w.clone()));
        }
        (old, r)
    }
}

#[derive(Default)]
pub struct WalletSlot {
    evm: Held<Wallet>,
    /// The Solana key, its own entry beside the EVM key's (see `solana`).
    solana: Held<SolanaWallet>,
}

impl WalletSlot {
    /// A slot that already holds `w` (embedders and tests that have the key in hand).
    pub fn loaded(w: Wallet) -> Self {
        let slot = WalletSlot::default();
        slot.evm.set(Some(w));
        slot
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// The key in use, loading it from the store when none is.
    pub async fn get(&self, loc: &KeyLocation) -> Result<Wallet, ProxyError> {
        let (w, loaded) = self.evm.get(|| load(loc)).await.map_err(to_proxy)?;
        if loaded {
            tracing::info!(address = %w.address(), "wallet loaded");
        }
        Ok(w)
    }

    /// The Solana key in use, loading it from the store when none is.
    pub async fn get_solana(&self, loc: &KeyLocation) -> Result<SolanaWallet, ProxyError> {
        let (w, loaded) = self
            .solana
            .get(|| load_solana(loc))
            .await
            .map_err(to_proxy)?;
        if loaded {
            tracing::info!(address = %w.address(), "Solana wallet loaded");
        }
        Ok(w)
    }

    /// Drops the key in use and reads the store again. On any failure the slot
    /// stays empty: a key the user removed or rotated is never kept signing.
    pub async fn reload(&self, loc: &KeyLocation) -> Result<Option<Wallet>, WalletError> {
        let (old, r) = self.evm.reload(|| load(loc)).await;
        let r = match r {
            Ok(w) => Ok(Some(w)),
            Err(WalletError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        let (old, new) = (
            old.map(|w| w.address()),
            self.evm.peek().map(|w| w.address()),
        );
        if old != new {
            match (old, new) {
                (_, Some(n)) => tracing::info!(address = %n, "wallet key changed"),
                (Some(_), None) => tracing::warn!("wallet key gone: paid calls get 503"),
                (None, None) => {}
            }
        }
        r
    }

    /// `reload` for the Solana key: `Ok(None)` when there is none.
    pub async fn reload_solana(
        &self,
        loc: &KeyLocation,
    ) -> Result<Option<SolanaWallet>, WalletError> {
        let (old, r) = self.solana.reload(|| load_solana(loc)).await;
        let r = match r {
            Ok(w) => Ok(Some(w)),
            Err(WalletError::MissingSolana { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        let (old, new) = (
            old.map(|w| w.address()),
            self.solana.peek().map(|w| w.address()),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::{Source, Store};

    /// anvil dev keys #1 and #2: public test keys, never funded on a real chain.
    const KEY_A: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    const KEY_B: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

    /// A location no key can be loaded from (no `$CREDENTIALS_DIRECTORY` in tests).
    fn nowhere() -> KeyLocation {
        KeyLocation {
            source: Source::SystemdCredential,
            store: Store::Keyutils,
            service: "x402d-test-nowhere".into(),
            user: "nobody".into(),
        }
    }

    #[tokio::test]
    async fn a_loaded_key_is_read_without_the_store_and_swapped_by_set() {
        let a = Wallet::from_hex(KEY_A).unwrap();
        let b = Wallet::from_hex(KEY_B).unwrap();
        let slot = WalletSlot::loaded(a.clone());
        assert_eq!(slot.get(&nowhere()).await.unwrap().address(), a.address());
        slot.evm.set(Some(b.clone()));
        assert_eq!(slot.get(&nowhere()).await.unwrap().address(), b.address());
    }

    #[tokio::test]
    async fn a_failed_reload_leaves_no_key_signing() {
        let slot = WalletSlot::loaded(Wallet::from_hex(KEY_A).unwrap());
        assert!(slot.reload(&nowhere()).await.is_err());
        assert!(slot.evm.peek().is_none());
        assert!(slot.get(&nowhere()).await.is_err());
    }
}
