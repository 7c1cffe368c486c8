//! What the `x402d wallet` commands do, apart from talking to the user:
//! store a key only where a later command will find it, never replace one
//! without being asked, and say where the key lives and what survives a reboot.

use super::{KeyLocation, Source, Store, Wallet, WalletError, canonical, keyring};
use alloy_primitives::Address;
use zeroize::Zeroizing;

/// A place that keeps the key. The keyring stores implement it; tests use fakes.
pub trait Backend {
    /// The stored key text; `None` when there is none.
    fn read(&self) -> Result<Option<Zeroizing<String>>, WalletError>;
    fn write(&self, key: &str) -> Result<(), WalletError>;
    /// `Ok(false)` when there was no key.
    fn delete(&self) -> Result<bool, WalletError>;
    /// The key as a later command will see it (a fresh lookup).
    fn read_back(&self) -> Result<Option<Zeroizing<String>>, WalletError> {
        self.read()
    }
    fn info(&self) -> StoreInfo;
}

/// Where the key is kept, in words, and whether it survives a reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// e.g. `kernel keyring (keyutils) entry "keyring:wallet@x402d"`.
    pub name: String,
    pub survives_reboot: bool,
    /// One line on what can make the key disappear, if anything.
    pub caveat: Option<String>,
    /// How to make a store that does not keep the key work.
    pub fix: String,
}

impl StoreInfo {
    /// Blocking: with `store = "auto"` it asks the session bus which store is used.
    pub fn for_location(loc: &KeyLocation) -> StoreInfo {
        let store = match loc.source {
            Source::Keyring => keyring::resolve(loc),
            Source::SystemdCredential => loc.store,
        };
        match (loc.source, store) {
            (Source::SystemdCredential, _) => StoreInfo {
                name: format!("systemd credential {:?}", super::CREDENTIAL_NAME),
                survives_reboot: true,
                caveat: None,
                fix: "create the credential with `systemd-creds encrypt` (see the README)".into(),
            },
            (Source::Keyring, Store::Keyutils | Store::Auto) => {
                let expiry = keyring::persistent_expiry_secs()
                    .map(|s| format!("{} idle", human_secs(s)))
                    .unwrap_or_else(|| "the idle expiry".into());
                StoreInfo {
                    name: format!(
                        "kernel keyring (keyutils: the persistent keyring of uid {}, entry \"keyring:{}@{}\")",
                        rustix::process::getuid().as_raw(),
                        loc.user,
                        loc.service
                    ),
                    survives_reboot: false,
                    caveat: Some(format!(
                        "the kernel keyring is memory only: the key is lost at reboot, and after {expiry} \
                         (/proc/sys/kernel/keys/persistent_keyring_expiry) when no x402d runs; keep a backup \
                         (`x402d wallet export --keystore FILE`) or use the Secret Service (wallet.store = \"secret-service\")"
                    )),
                    fix: "run it inside a session keyring (a login session, or `keyctl session - x402d wallet …`), \
                          use the Secret Service (wallet.store = \"secret-service\"), or, for a system service, \
                          the systemd credential (wallet.source = \"systemd-credential\")"
                        .into(),
                }
            }
            (Source::Keyring, Store::SecretService) => StoreInfo {
                name: format!(
                    "Secret Service (login keyring; service {:?}, user {:?})",
                    loc.service, loc.user
                ),
                survives_reboot: true,
                caveat: None,
                fix: "unlock the login keyring (GNOME Keyring, KWallet or KeePassXC) in this session, \
                      or use wallet.store = \"keyutils\" with a backup"
                    .into(),
            },
        }
    }

    /// One line for the user: where, and what survives a reboot.
    pub fn summary(&self) -> String {
        match &self.caveat {
            Some(c) => format!("{}; {c}", self.name),
            None => format!("{}; it survives a reboot", self.name),
        }
    }
}

fn human_secs(s: u64) -> String {
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{} days", s / 86_400),
        s if s % 3_600 == 0 && s > 0 => format!("{} hours", s / 3_600),
        s => format!("{s} s"),
    }
}

/// The OS keyring entry at a location.
pub struct KeyringBackend(pub KeyLocation);

impl Backend for KeyringBackend {
    fn read(&self) -> Result<Option<Zeroizing<String>>, WalletError> {
        keyring::read(&self.0)
    }
    fn write(&self, key: &str) -> Result<(), WalletError> {
        keyring::write(&self.0, key)
    }
    fn delete(&self) -> Result<bool, WalletError> {
        keyring::delete(&self.0)
    }
    fn read_back(&self) -> Result<Option<Zeroizing<String>>, WalletError> {
        keyring::read_back(&self.0)
    }
    fn info(&self) -> StoreInfo {
        StoreInfo::for_location(&self.0)
    }
}

/// A kind of key the store can hold: how to read its address and compare it.
pub trait KeyKind {
    type Address: Copy + PartialEq + std::fmt::Display + std::fmt::Debug;
    fn address(key: &str) -> Result<Self::Address, WalletError>;
    /// The stored form (two spellings of one key compare equal).
    fn canonical(key: &str) -> Zeroizing<String>;
}

/// The EVM key: 0x-hex secp256k1.
pub struct Evm;

impl KeyKind for Evm {
    type Address = Address;
    fn address(key: &str) -> Result<Address, WalletError> {
        Wallet::from_hex(key).map(|w| w.address())
    }
    fn canonical(key: &str) -> Zeroizing<String> {
        canonical(key)
    }
}

/// The Solana key: a base58 (or JSON array) ed25519 keypair.
pub struct Solana;

impl KeyKind for Solana {
    type Address = crate::x402::svm::Pubkey;
    fn address(key: &str) -> Result<Self::Address, WalletError> {
        super::solana::SolanaWallet::parse(key).map(|w| w.address())
    }
    fn canonical(key: &str) -> Zeroizing<String> {
        super::solana::canonical(key).unwrap_or_else(|_| Zeroizing::new(key.trim().to_string()))
    }
}

/// What `put` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put<A = Address> {
    pub address: A,
    /// The address of the key this one replaced.
    pub replaced: Option<A>,
    /// The same key was already stored: nothing written.
    pub unchanged: bool,
}

/// The address of the stored key: `Ok(None)` when there is none,
/// `Err(BadKey)` when what is stored is not a key.
pub fn current(b: &dyn Backend) -> Result<Option<Address>, WalletError> {
    current_of::<Evm>(b)
}

/// `current` for any kind of key.
pub fn current_of<K: KeyKind>(b: &dyn Backend) -> Result<Option<K::Address>, WalletError> {
    match b.read()? {
        None => Ok(None),
        Some(k) => K::address(&k).map(Some),
    }
}

/// Stores `key`. Refuses when another key is stored unless `replace`. Succeeds
/// only when a fresh lookup returns the key; otherwise puts back what was there
/// (or removes the unreachable new key) and says how to fix the store.
pub fn put(b: &dyn Backend, key: &str, replace: bool) -> Result<Put, WalletError> {
    put_of::<Evm>(b, key, replace)
}

/// `put` for any kind of key.
pub fn put_of<K: KeyKind>(
    b: &dyn Backend,
    key: &str,
    replace: bool,
) -> Result<Put<K::Address>, WalletError> {
    let new = K::address(key)?;
    let key = K::canonical(key);
    let canonical = K::canonical;
    let old = b.read()?;
    let old_addr = old.as_ref().map(|k| {
        K::address(k)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "unreadable: not a key".into())
    });
    if let Some(o) = &old {
        if canonical(o) == key {
            // Already there; still make sure a later command sees it.
            return match b.read_back()? {
                Some(k) if canonical(&k) == key => Ok(Put {
                    address: new,
                    replaced: None,
                    unchanged: true,
                }),
                _ => Err(not_kept(
                    b,
                    "is stored but a fresh lookup does not return it",
                    false,
                )),
            };
        }
        if !replace {
            return Err(WalletError::Exists {
                address: old_addr.unwrap_or_default(),
                store: b.info().name,
            });
        }
    }
    b.write(&key)?;
    let back = b.read_back();
    if matches!(&back, Ok(Some(k)) if canonical(k) == key) {
        return Ok(Put {
            address: new,
            replaced: old.as_ref().and_then(|k| K::address(k).ok()),
            unchanged: false,
        });
    }
    // Undo: the previous key back in place, or no trace of the new one.
    let restored = match &old {
        Some(o) => b.write(o).is_ok() && matches!(b.read_back(), Ok(Some(k)) if k == *o),
        None => b.delete().is_ok(),
    };
    let why = match back {
        Err(e) => format!("was accepted but cannot be read back ({e})"),
        Ok(_) => {
            "was accepted but a fresh lookup (as the next command would do) does not return it"
                .into()
        }
    };
    Err(not_kept(b, &why, old.is_some() && !restored))
}

fn not_kept(b: &dyn Backend, why: &str, old_lost: bool) -> WalletError {
    let info = b.info();
    let undo = if old_lost {
        " The previous key could not be put back: import it again from your backup."
    } else {
        " Nothing was changed."
    };
    WalletError::NotKept(format!(
        "the key {why} by the {}, so a later command would not find it.{undo} Fix: {}",
        info.name, info.fix
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const A: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const A_ADDR: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    const B: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    const B_ADDR: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

    /// A store in memory; `forgets` makes every write invisible to a fresh lookup
    /// (a session keyring that dies with the process).
    #[derive(Default)]
    struct Fake {
        key: RefCell<Option<String>>,
        forgets: bool,
    }

    impl Backend for Fake {
        fn read(&self) -> Result<Option<Zeroizing<String>>, WalletError> {
            Ok(self.key.borrow().clone().map(Zeroizing::new))
        }
        fn write(&self, key: &str) -> Result<(), WalletError> {
            *self.key.borrow_mut() = Some(key.to_string());
            Ok(())
        }
        fn delete(&self) -> Result<bool, WalletError> {
            Ok(self.key.borrow_mut().take().is_some())
        }
        fn read_back(&self) -> Result<Option<Zeroizing<String>>, WalletError> {
            if self.forgets {
                return Ok(None);
            }
            self.read()
        }
        fn info(&self) -> StoreInfo {
            StoreInfo {
                name: "fake store".into(),
                survives_reboot: false,
                caveat: None,
                fix: "keyctl session -".into(),
            }
        }
    }

    #[test]
    fn a_key_a_fresh_lookup_cannot_see_is_never_reported_stored() {
        let f = Fake {
            forgets: true,
            ..Fake::default()
        };
        let e = put(&f, A, false).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, WalletError::NotKept(_)), "{msg}");
        assert!(msg.contains("keyctl session -"), "{msg}");
        assert!(msg.contains("Nothing was changed"), "{msg}");
        assert!(!msg.contains("ac0974"), "{msg}");
        assert_eq!(
            *f.key.borrow(),
            None,
            "the unreachable key is not left behind"
        );
    }

    #[test]
    fn a_failed_replace_puts_the_old_key_back() {
        let f = Fake {
            key: RefCell::new(Some(canonical(A).to_string())),
            forgets: true,
        };
        assert!(matches!(put(&f, B, true), Err(WalletError::NotKept(_))));
        assert_eq!(f.key.borrow().as_deref(), Some(A));
    }

    #[test]
    fn an_existing_key_is_replaced_only_when_asked() {
        let f = Fake::default();
        let p = put(&f, A, false).unwrap();
        assert_eq!(p.address.to_string(), A_ADDR);
        assert_eq!(p.replaced, None);
        let e = put(&f, B, false).unwrap_err();
        assert!(e.to_string().contains(A_ADDR), "{e}");
        assert!(e.to_string().contains("--replace"), "{e}");
        assert_eq!(f.key.borrow().as_deref(), Some(A));
        // The same key again is not a replacement.
        assert!(put(&f, &A[2..].to_uppercase(), false).unwrap().unchanged);
        let p = put(&f, B, true).unwrap();
        assert_eq!(p.address.to_string(), B_ADDR);
        assert_eq!(p.replaced.map(|a| a.to_string()).as_deref(), Some(A_ADDR));
        assert_eq!(
            current(&f).unwrap().map(|a| a.to_string()).as_deref(),
            Some(B_ADDR)
        );
    }

    #[test]
    fn solana_keys_get_the_same_safety() {
        let (a, ka) = super::super::solana::SolanaWallet::generate().unwrap();
        let (b, kb) = super::super::solana::SolanaWallet::generate().unwrap();
        let f = Fake::default();
        let p = put_of::<Solana>(&f, &ka, false).unwrap();
        assert_eq!(p.address, a.address());
        let e = put_of::<Solana>(&f, &kb, false).unwrap_err();
        assert!(e.to_string().contains(&a.address().to_string()), "{e}");
        assert!(!e.to_string().contains(kb.as_str()));
        // The same key as a CLI JSON array is the same key.
        let json = serde_json::to_string(&bs58::decode(ka.as_str()).into_vec().unwrap()).unwrap();
        assert!(put_of::<Solana>(&f, &json, false).unwrap().unchanged);
        let p = put_of::<Solana>(&f, &kb, true).unwrap();
        assert_eq!(p.replaced, Some(a.address()));
        assert_eq!(current_of::<Solana>(&f).unwrap(), Some(b.address()));
        let forgets = Fake {
            forgets: true,
            ..Fake::default()
        };
        assert!(matches!(
            put_of::<Solana>(&forgets, &ka, false),
            Err(WalletError::NotKept(_))
        ));
    }
}
