//! The wallet: a secp256k1 key kept in the OS keyring (or, for system services, a
//! systemd credential), loaded once into memory and used only to sign EIP-3009
//! authorizations. The key never appears in logs, errors, files or stdout.

pub mod cmd;
pub mod eip3009;
pub mod keyring;
pub mod keystore;
pub mod ops;
pub mod slot;
pub mod solana;

use crate::x402::header::Authorization;
use alloy_primitives::Address;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::Eip712Domain;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Where the key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The OS keyring (kernel keyutils by default; Secret Service with the feature).
    Keyring,
    /// `$CREDENTIALS_DIRECTORY/x402d-wallet` (systemd `LoadCredentialEncrypted=`).
    SystemdCredential,
}

/// Which keyring store backs `Source::Keyring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Store {
    /// The Secret Service when the session bus offers one (and the key is not
    /// already in keyutils), kernel keyutils otherwise.
    Auto,
    Keyutils,
    SecretService,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error(
        "no wallet key in the keyring entry ({service}, {user}); run `x402d wallet import` (or `x402d wallet new`)"
    )]
    Missing { service: String, user: String },
    #[error(
        "no Solana wallet key in the keyring entry ({service}, {user}); run `x402d wallet import --solana` (or `x402d wallet new --solana`)"
    )]
    MissingSolana { service: String, user: String },
    #[error(
        "the Solana key is not a base58 64-byte secret key or a Solana CLI keypair (a JSON array of 64 numbers) whose public half matches"
    )]
    BadSolanaKey,
    #[error("the keyring is not reachable: {0}")]
    Keyring(String),
    #[error("the stored wallet key is not a 32-byte hex private key")]
    BadKey,
    #[error("systemd credential: {0}")]
    Credential(String),
    #[error("signing failed")]
    Sign,
    #[error(
        "a wallet key already exists in the {store} (address {address}); nothing was changed. To replace it, move its funds first (or back it up: `x402d wallet export --keystore FILE`), then add `--replace`"
    )]
    Exists { address: String, store: String },
    /// The store accepted the key but a fresh lookup does not return it.
    #[error("{0}")]
    NotKept(String),
}

/// A loaded signing key. Debug/Display print only the address.
#[derive(Clone)]
pub struct Wallet {
    signer: Arc<PrivateKeySigner>,
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wallet({})", self.address())
    }
}

impl Wallet {
    /// Parses a 0x-prefixed (or bare) 64-hex-digit private key.
    pub fn from_hex(key: &str) -> Result<Wallet, WalletError> {
        let key = Zeroizing::new(key.trim().trim_start_matches("0x").to_string());
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WalletError::BadKey);
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(key.as_bytes(), bytes.as_mut()).map_err(|_| WalletError::BadKey)?;
        let signer =
            PrivateKeySigner::from_slice(bytes.as_ref()).map_err(|_| WalletError::BadKey)?;
        Ok(Wallet {
            signer: Arc::new(signer),
        })
    }

    /// A fresh random key; returns the wallet and its hex encoding (for storing).
    pub fn generate() -> (Wallet, Zeroizing<String>) {
        let signer = PrivateKeySigner::random();
        let hex = Zeroizing::new(format!("0x{}", hex::encode(signer.to_bytes())));
        (
            Wallet {
                signer: Arc::new(signer),
            },
            hex,
        )
    }

    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// Signs an authorization; returns the 65-byte r‖s‖v signature (v = 27/28).
    pub fn sign(
        &self,
        auth: &Authorization,
        domain: &Eip712Domain,
    ) -> Result<[u8; 65], WalletError> {
        let hash = eip3009::signing_hash(auth, domain);
        let sig = self
            .signer
            .sign_hash_sync(&hash)
            .map_err(|_| WalletError::Sign)?;
        Ok(sig.as_bytes())
    }
}

/// Where to find the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLocation {
    pub source: Source,
    pub store: Store,
    pub service: String,
    pub user: String,
}

/// Name of the systemd credential holding the key.
pub const CREDENTIAL_NAME: &str = "x402d-wallet";

/// Loads the key (blocking: call from `spawn_blocking` on async threads).
pub fn load(loc: &KeyLocation) -> Result<Wallet, WalletError> {
    match loc.source {
        Source::SystemdCredential => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                WalletError::Credential(format!(
                    "$CREDENTIALS_DIRECTORY is not set; add `LoadCredentialEncrypted={CREDENTIAL_NAME}:…` to the unit"
                ))
            })?;
            let path = std::path::Path::new(&dir).join(CREDENTIAL_NAME);
            let raw = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                WalletError::Credential(format!("cannot read {}: {}", path.display(), e.kind()))
            })?);
            Wallet::from_hex(&raw)
        }
        Source::Keyring => match keyring::read(loc)? {
            Some(k) => Wallet::from_hex(&k),
            None => Err(WalletError::Missing {
                service: loc.service.clone(),
                user: loc.user.clone(),
            }),
        },
    }
}

/// The canonical stored form of a key: `0x` and lowercase hex.
pub(crate) fn canonical(key: &str) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "0x{}",
        key.trim().trim_start_matches("0x").to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parsing_never_echoes_the_key() {
        let k = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let w = Wallet::from_hex(k).unwrap();
        assert_eq!(
            w.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert!(!format!("{w:?}").contains("ac0974"));
        assert_eq!(Wallet::from_hex(&k[2..]).unwrap().address(), w.address());
        for bad in ["", "0x12", "zz", &k[..60], &format!("{k}00")] {
            let e = Wallet::from_hex(bad).unwrap_err();
            assert_eq!(e, WalletError::BadKey);
            assert!(!e.to_string().contains("ac0974"));
        }
    }
}
