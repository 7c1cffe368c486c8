//! The Solana key: an ed25519 keypair kept in the same store as the EVM key,
//! under its own entry (keyring user `<user>-solana`, systemd credential
//! `x402d-wallet-solana`). Stored as the base58 64-byte keypair (seed ‖ public
//! key), the form Phantom and `solana-keygen` exports use. It only ever signs
//! the message of an x402 `exact` payment built by `x402::svm`.

use super::{KeyLocation, Source, WalletError, keyring};
use crate::x402::svm::Pubkey;
use ed25519_dalek::{Signer, SigningKey};
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Keyring user suffix of the Solana entry.
pub const USER_SUFFIX: &str = "-solana";
/// Name of the systemd credential holding the Solana key.
pub const CREDENTIAL_NAME: &str = "x402d-wallet-solana";

/// A loaded Solana signing key. Debug prints only the address.
#[derive(Clone)]
pub struct SolanaWallet {
    key: Arc<SigningKey>,
}

impl fmt::Debug for SolanaWallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SolanaWallet({})", self.address())
    }
}

impl SolanaWallet {
    /// Parses a secret key: base58 of the 64-byte keypair, or a Solana CLI
    /// keypair file's JSON array of 64 numbers. The public half must match.
    pub fn parse(text: &str) -> Result<SolanaWallet, WalletError> {
        let text = text.trim();
        let mut bytes = Zeroizing::new([0u8; 64]);
        if text.starts_with('[') {
            let v: Zeroizing<Vec<u8>> =
                Zeroizing::new(serde_json::from_str(text).map_err(|_| WalletError::BadSolanaKey)?);
            if v.len() != 64 {
                return Err(WalletError::BadSolanaKey);
            }
            bytes.copy_from_slice(&v);
        } else {
            match bs58::decode(text).onto(bytes.as_mut()) {
                Ok(64) => {}
                _ => return Err(WalletError::BadSolanaKey),
            }
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes()[..] != bytes[32..] {
            return Err(WalletError::BadSolanaKey);
        }
        Ok(SolanaWallet { key: Arc::new(key) })
    }

    /// A fresh random key; returns it and its stored form.
    pub fn generate() -> Result<(SolanaWallet, Zeroizing<String>), WalletError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| WalletError::Sign)?;
        let w = SolanaWallet {
            key: Arc::new(SigningKey::from_bytes(&seed)),
        };
        let stored = w.stored();
        Ok((w, stored))
    }

    /// The canonical stored form: base58 of seed ‖ public key.
    pub fn stored(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.key.to_keypair_bytes());
        Zeroizing::new(bs58::encode(bytes.as_ref()).into_string())
    }

    pub fn address(&self) -> Pubkey {
        Pubkey(self.key.verifying_key().to_bytes())
    }

    /// Signs a transaction message (ed25519 is deterministic: the same message
    /// gives the same signature).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// The store location of the Solana key, beside the EVM key's.
pub fn location(evm: &KeyLocation) -> KeyLocation {
    KeyLocation {
        user: format!("{}{USER_SUFFIX}", evm.user),
        ..evm.clone()
    }
}

/// The canonical stored form of a key text (for comparisons).
pub fn canonical(text: &str) -> Result<Zeroizing<String>, WalletError> {
    Ok(SolanaWallet::parse(text)?.stored())
}

/// Loads the Solana key (blocking). `loc` is the EVM key's location.
pub fn load(loc: &KeyLocation) -> Result<SolanaWallet, WalletError> {
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
            SolanaWallet::parse(&raw)
        }
        Source::Keyring => {
            let sol = location(loc);
            match keyring::read(&sol)? {
                Some(k) => SolanaWallet::parse(&k),
                None => Err(WalletError::MissingSolana {
                    service: sol.service,
                    user: sol.user,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base58_and_cli_json_and_never_echoes() {
        let (w, stored) = SolanaWallet::generate().unwrap();
        let again = SolanaWallet::parse(&stored).unwrap();
        assert_eq!(again.address(), w.address());
        let bytes = bs58::decode(stored.as_str()).into_vec().unwrap();
        let json = serde_json::to_string(&bytes).unwrap();
        assert_eq!(
            SolanaWallet::parse(&format!(" {json}\n"))
                .unwrap()
                .address(),
            w.address()
        );
        assert!(!format!("{w:?}").contains(stored.as_str()));
        assert_eq!(*canonical(&json).unwrap(), *stored);
        // A keypair whose public half does not match its seed is refused.
        let mut bad = bytes.clone();
        bad[40] ^= 1;
        assert_eq!(
            SolanaWallet::parse(&bs58::encode(&bad).into_string()).unwrap_err(),
            WalletError::BadSolanaKey
        );
        for bad in [
            "",
            "[1,2,3]",
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
            &stored[..40],
        ] {
            assert_eq!(
                SolanaWallet::parse(bad).unwrap_err(),
                WalletError::BadSolanaKey
            );
        }
        let msg = b"message";
        assert_eq!(w.sign(msg), w.sign(msg), "deterministic");
    }

    #[test]
    fn its_own_entry() {
        let evm = KeyLocation {
            source: Source::Keyring,
            store: super::super::Store::Keyutils,
            service: "x402d".into(),
            user: "wallet".into(),
        };
        let l = location(&evm);
        assert_eq!(
            (l.service.as_str(), l.user.as_str()),
            ("x402d", "wallet-solana")
        );
    }
}
