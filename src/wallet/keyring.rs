//! The OS keyring stores behind `Source::Keyring`: kernel keyutils and the
//! Secret Service, reached through `keyring-core`.
//!
//! Kernel keyutils keeps the key in the uid's *persistent keyring* (linked into
//! each session keyring): in memory only, so it is gone after a reboot, and the
//! kernel drops the persistent keyring after `persistent_keyring_expiry` seconds
//! (3 days by default) without use. A process with no session keyring of its
//! own (a plain shell outside a login session, `setsid env -i …`) would add the
//! key to a throw-away session keyring and search another one on the next run;
//! `ensure_session` gives such a process its own session keyring first, so the
//! persistent keyring is linked where the lookup searches.

use super::{KeyLocation, Store, WalletError};
use keyring_core::api::CredentialStore;
use linux_keyutils::{KeyError, KeyRing, KeyRingIdentifier};
use std::sync::Arc;
use zeroize::Zeroizing;

/// One store object per kind, made on first use.
static STORES: std::sync::Mutex<Vec<(Store, Arc<CredentialStore>)>> =
    std::sync::Mutex::new(Vec::new());

fn store_object(store: Store) -> Result<Arc<CredentialStore>, WalletError> {
    let mut all = STORES
        .lock()
        .map_err(|_| WalletError::Keyring("keyring store lock poisoned".into()))?;
    if let Some((_, s)) = all.iter().find(|(k, _)| *k == store) {
        return Ok(s.clone());
    }
    let s: Arc<CredentialStore> = match store {
        Store::Keyutils | Store::Auto => {
            ensure_session()?;
            linux_keyutils_keyring_store::Store::new()
                .map_err(|e| WalletError::Keyring(describe(&e)))?
        }
        #[cfg(feature = "secret-service")]
        Store::SecretService => dbus_secret_service_keyring_store::Store::new()
            .map_err(|e| WalletError::Keyring(describe(&e)))?,
        #[cfg(not(feature = "secret-service"))]
        Store::SecretService => {
            return Err(WalletError::Keyring(
                "wallet.store = \"secret-service\" needs x402d built with `--features secret-service`"
                    .into(),
            ));
        }
    };
    all.push((store, s.clone()));
    Ok(s)
}

/// Does the session bus offer a Secret Service (`org.freedesktop.secrets`
/// owned by a running keyring daemon)? A bus without one (a bare
/// `dbus-run-session`, a desktop without a keyring daemon) does not count.
pub fn secret_service_available() -> bool {
    #[cfg(feature = "secret-service")]
    {
        secret_service_on_bus().unwrap_or(false)
    }
    #[cfg(not(feature = "secret-service"))]
    {
        false
    }
}

#[cfg(feature = "secret-service")]
fn secret_service_on_bus() -> Result<bool, dbus::Error> {
    const NAME: &str = "org.freedesktop.secrets";
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
        && std::env::var_os("XDG_RUNTIME_DIR").is_none()
    {
        return Ok(false);
    }
    let conn = dbus::blocking::Connection::new_session()?;
    let bus = conn.with_proxy(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        std::time::Duration::from_secs(2),
    );
    // Owned now: a desktop session starts its keyring daemon at login. A name
    // that is only activatable (the package is installed) is not enough: started
    // on demand outside a login, the daemon has no unlocked keyring to store in.
    let (owned,): (bool,) = bus.method_call("org.freedesktop.DBus", "NameHasOwner", (NAME,))?;
    Ok(owned)
}

/// The store `Auto` stands for here and now: the Secret Service when it is
/// offered, unless it holds no key and keyutils does (a key is never left
/// behind where x402d stops looking); keyutils otherwise. Blocking (D-Bus).
pub fn resolve(loc: &KeyLocation) -> Store {
    if loc.store != Store::Auto {
        return loc.store;
    }
    if !secret_service_available() {
        return Store::Keyutils;
    }
    let at = |store| KeyLocation {
        store,
        ..loc.clone()
    };
    match read_in(&at(Store::SecretService)) {
        Ok(Some(_)) => Store::SecretService,
        Ok(None) => match read_in(&at(Store::Keyutils)) {
            Ok(Some(_)) => Store::Keyutils,
            _ => Store::SecretService,
        },
        // A session bus, but no Secret Service answering on it (a bare
        // `dbus-run-session`, a desktop without a keyring daemon).
        Err(_) => Store::Keyutils,
    }
}

/// Gives this process a session keyring of its own if it has none (the kernel
/// otherwise falls back to the user-session keyring for lookups but creates an
/// anonymous one when the persistent keyring is linked, and the two disagree).
fn ensure_session() -> Result<(), WalletError> {
    KeyRing::from_special_id(KeyRingIdentifier::Session, true)
        .map(|_| ())
        .map_err(|e| WalletError::Keyring(format!("cannot get a session keyring: {e}")))
}

/// The keyutils description `keyring-core`'s store uses for an entry.
fn description(loc: &KeyLocation) -> String {
    format!("keyring:{}@{}", loc.user, loc.service)
}

/// Describes a keyring error without ever including secret bytes
/// (`BadEncoding`/`BadDataFormat` carry the stored secret).
pub(crate) fn describe(e: &keyring_core::Error) -> String {
    use keyring_core::Error as E;
    match e {
        E::NoEntry => "no entry".into(),
        E::BadEncoding(_) | E::BadDataFormat(..) => "the stored secret is not valid text".into(),
        E::NoStorageAccess(p) => format!(
            "access denied ({p}); with the kernel keyring, run inside a session keyring (a login session, a systemd service, or `keyctl session - …`)"
        ),
        E::PlatformFailure(p) => format!("platform failure ({p})"),
        E::NoDefaultStore => "no keyring store configured".into(),
        E::TooLong(what, n) => format!("{what} is longer than {n}"),
        E::Invalid(what, why) => format!("invalid {what}: {why}"),
        _ => "keyring error".into(),
    }
}

fn entry(loc: &KeyLocation) -> Result<keyring_core::Entry, WalletError> {
    store_object(resolve(loc))?
        .build(&loc.service, &loc.user, None)
        .map_err(|e| WalletError::Keyring(describe(&e)))
}

/// The stored key text, `None` when there is no entry (blocking).
pub fn read(loc: &KeyLocation) -> Result<Option<Zeroizing<String>>, WalletError> {
    read_in(&KeyLocation {
        store: resolve(loc),
        ..loc.clone()
    })
}

fn read_in(loc: &KeyLocation) -> Result<Option<Zeroizing<String>>, WalletError> {
    match entry(loc)?.get_password() {
        Ok(pw) => Ok(Some(Zeroizing::new(pw))),
        Err(keyring_core::Error::NoEntry) => Ok(None),
        Err(e) => Err(WalletError::Keyring(describe(&e))),
    }
}

/// Stores the key text (blocking). Callers read it back: see `ops::put`.
pub fn write(loc: &KeyLocation, key: &str) -> Result<(), WalletError> {
    entry(loc)?
        .set_password(key)
        .map_err(|e| WalletError::Keyring(describe(&e)))
}

/// Deletes the key; `Ok(false)` when there was none.
pub fn delete(loc: &KeyLocation) -> Result<bool, WalletError> {
    match entry(loc)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring_core::Error::NoEntry) => Ok(false),
        Err(e) => Err(WalletError::Keyring(describe(&e))),
    }
}

/// What a later command will find: a fresh lookup, and for keyutils the
/// uid's persistent keyring itself (a later command's session keyring is not
/// this one; the persistent keyring is what they share).
pub fn read_back(loc: &KeyLocation) -> Result<Option<Zeroizing<String>>, WalletError> {
    let fresh = read(loc)?;
    if resolve(loc) != Store::Keyutils {
        return Ok(fresh);
    }
    let persistent = KeyRing::get_persistent(KeyRingIdentifier::Session).map_err(|e| {
        WalletError::Keyring(format!(
            "the kernel offers no persistent keyring ({e}), so the key would live only as long as this session"
        ))
    })?;
    let key = match persistent.search(&description(loc)) {
        Ok(k) => k,
        Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => {
            return Ok(None);
        }
        Err(e) => return Err(WalletError::Keyring(format!("persistent keyring: {e}"))),
    };
    let bytes = Zeroizing::new(
        key.read_to_vec()
            .map_err(|e| WalletError::Keyring(format!("persistent keyring: {e}")))?,
    );
    let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
    match fresh {
        Some(f) if *f == *text => Ok(Some(f)),
        _ => Ok(None),
    }
}

/// Resets the persistent keyring's idle expiry (`persistent_keyring_expiry`):
/// the daemon calls this periodically so a running x402d never loses its key
/// to the idle timer. A no-op for other stores.
pub fn keep_alive(loc: &KeyLocation) {
    if loc.source != super::Source::Keyring || resolve(loc) != Store::Keyutils {
        return;
    }
    // KEYCTL_GET_PERSISTENT resets the timer; the lookup also re-links the key.
    let _ = KeyRing::get_persistent(KeyRingIdentifier::Session);
    let _ = read(loc);
}

/// The idle expiry of the persistent keyring, in seconds.
pub fn persistent_expiry_secs() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/keys/persistent_keyring_expiry")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Runs forever: keeps the persistent keyring from expiring while the daemon
/// runs (every hour, or a quarter of the expiry if that is shorter). `loc`
/// gives the current key location (it can change on reload).
pub async fn keep_alive_forever(loc: impl Fn() -> KeyLocation) {
    let every = persistent_expiry_secs()
        .map(|s| (s / 4).clamp(60, 3600))
        .unwrap_or(3600);
    loop {
        let l = loc();
        let _ = tokio::task::spawn_blocking(move || keep_alive(&l)).await;
        tokio::time::sleep(std::time::Duration::from_secs(every)).await;
    }
}
