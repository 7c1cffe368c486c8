//! The `x402d wallet …` subcommands: argument types and what each one does.
//! `main` only dispatches here, so the CLI file stays thin.

use super::ops::{self, Backend, KeyringBackend, StoreInfo};
use super::{Source, Wallet, WalletError};
use crate::config::Loaded;
use clap::Subcommand;
use serde_json::Value;
use std::io::{IsTerminal, Read};
use zeroize::Zeroizing;

#[derive(Subcommand, Debug, Clone)]
pub enum WalletCmd {
    /// Generate a new key, store it in the keyring and print its address.
    New {
        /// Replace an existing key (its funds stay with the old key: move them first).
        #[arg(long)]
        replace: bool,
    },
    /// Read a 0x-hex private key from stdin (no echo on a terminal) and store it.
    Import {
        /// Replace an existing key; prints the old and the new address.
        #[arg(long)]
        replace: bool,
    },
    /// Print the wallet's address.
    Address,
    /// Delete the key from the keyring.
    Remove {
        /// Confirm: the key cannot be recovered from x402d afterwards.
        #[arg(long)]
        yes: bool,
    },
}

/// A failure for the user: exit code and a message that says what to do next.
#[derive(Debug)]
pub struct CmdError(pub u8, pub String);

impl From<WalletError> for CmdError {
    fn from(e: WalletError) -> Self {
        CmdError(1, e.to_string())
    }
}

/// A line on stdout; a closed pipe is not an error.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Runs a blocking keyring operation off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WalletError> + Send + 'static,
) -> Result<T, CmdError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CmdError(1, format!("wallet task failed: {e}")))?
        .map_err(CmdError::from)
}

pub async fn run(cfg: &Loaded, cmd: &WalletCmd) -> Result<(), CmdError> {
    let loc = cfg.key_location();
    let info = StoreInfo::for_location(&loc);
    if loc.source == Source::SystemdCredential && !matches!(cmd, WalletCmd::Address) {
        return Err(CmdError(
            2,
            "wallet.source is \"systemd-credential\": create the credential with `systemd-creds encrypt` instead (see the README)".into(),
        ));
    }
    match cmd {
        WalletCmd::Address => {
            let l = loc.clone();
            let w = blocking(move || super::load(&l)).await?;
            say(&format!("{}", w.address()));
            eprintln!("key in the {}", info.name);
            eprintln!("{}", durability(&info));
            Ok(())
        }
        WalletCmd::New { replace } => {
            let (w, hex) = Wallet::generate();
            let b = KeyringBackend(loc.clone());
            let replace = *replace;
            let put = blocking(move || ops::put(&b, &hex, replace)).await?;
            debug_assert_eq!(put.address, w.address());
            report_put(cfg, &put, &info).await
        }
        WalletCmd::Import { replace } => {
            let key = read_key()?;
            // Parse before touching the store: a typo never reaches it.
            Wallet::from_hex(&key)?;
            let b = KeyringBackend(loc.clone());
            let replace = *replace;
            let put = blocking(move || ops::put(&b, &key, replace)).await?;
            report_put(cfg, &put, &info).await
        }
        WalletCmd::Remove { yes } => {
            if !yes {
                return Err(CmdError(
                    2,
                    format!(
                        "this deletes the wallet key from the {}; run `x402d wallet remove --yes` to confirm (back it up first: `x402d wallet export --keystore FILE`)",
                        info.name
                    ),
                ));
            }
            let b = KeyringBackend(loc.clone());
            let removed = blocking(move || b.delete()).await?;
            if removed {
                eprintln!("removed the wallet key from the {}", info.name);
            } else {
                eprintln!("there was no wallet key in the {}", info.name);
            }
            tell_daemon(cfg, None).await
        }
    }
}

/// "it survives a reboot" or what can make it vanish.
fn durability(info: &StoreInfo) -> String {
    match &info.caveat {
        Some(c) => format!("warning: {c}"),
        None => "it survives a reboot".into(),
    }
}

async fn report_put(cfg: &Loaded, put: &ops::Put, info: &StoreInfo) -> Result<(), CmdError> {
    say(&format!("{}", put.address));
    if put.unchanged {
        eprintln!("this key was already stored in the {}", info.name);
    } else {
        if let Some(old) = put.replaced {
            eprintln!("replaced the wallet key: old {old}, new {}", put.address);
        }
        eprintln!(
            "stored in the {} and read back as the next command will",
            info.name
        );
    }
    eprintln!("{}", durability(info));
    tell_daemon(cfg, Some(put.address.to_string())).await
}

/// Makes a running daemon re-read the key now, and checks it sees what we stored.
async fn tell_daemon(cfg: &Loaded, expect: Option<String>) -> Result<(), CmdError> {
    let reply = crate::admin::call(&cfg.state_dir, hyper::Method::POST, "/wallet/reload").await;
    match reply {
        Ok(None) => Ok(()),
        Err(e) => Err(CmdError(
            1,
            format!(
                "the key store changed, but the running x402d could not be told ({e}); run `x402d reload` so it stops using the old key"
            ),
        )),
        Ok(Some(v)) => {
            let using = v.get("wallet").and_then(Value::as_str).map(str::to_string);
            if using == expect {
                match &using {
                    Some(a) => eprintln!("the running x402d now pays with {a}"),
                    None => eprintln!("the running x402d has no key now: paid calls get 503"),
                }
                return Ok(());
            }
            let why = v
                .get("error")
                .and_then(Value::as_str)
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            Err(CmdError(
                1,
                format!(
                    "the running x402d reads {} from its key store{why}, not {}: it does not see the same keyring as this command (another session keyring?). Run this command where the daemon runs (e.g. `systemctl --user` units share the login session), then `x402d reload`",
                    using.as_deref().unwrap_or("no key"),
                    expect.as_deref().unwrap_or("no key")
                ),
            ))
        }
    }
}

fn read_key() -> Result<Zeroizing<String>, CmdError> {
    if std::io::stdin().is_terminal() {
        let k = rpassword::prompt_password("Private key (0x…, not echoed): ")
            .map_err(|e| CmdError(1, format!("cannot read the key: {e}")))?;
        return Ok(Zeroizing::new(k));
    }
    let mut s = Zeroizing::new(String::new());
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut s)
        .map_err(|e| CmdError(1, format!("cannot read the key from stdin: {e}")))?;
    if s.trim().is_empty() {
        return Err(CmdError(
            2,
            "no key on stdin; pipe a 0x-hex private key, e.g. `x402d wallet import < key.txt`"
                .into(),
        ));
    }
    Ok(Zeroizing::new(s.trim().to_string()))
}
