//! The `x402d wallet …` subcommands: argument types and what each one does.
//! `main` only dispatches here, so the CLI file stays thin.

use super::ops::{self, Backend, KeyringBackend, StoreInfo};
use super::{Source, Wallet, WalletError, keystore};
use crate::config::Loaded;
use clap::Subcommand;
use serde_json::Value;
use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Environment variable with the keystore passphrase, for scripts and tests.
/// Without it the passphrase is read without echo from the terminal, or as
/// the first line of stdin when stdin is not a terminal.
pub const PASSPHRASE_ENV: &str = "X402D_KEYSTORE_PASSPHRASE";

#[derive(Subcommand, Debug, Clone)]
pub enum WalletCmd {
    /// Generate a new key, store it in the keyring and print its address.
    New {
        /// Replace an existing key (its funds stay with the old key: move them first).
        #[arg(long)]
        replace: bool,
        /// The Solana (ed25519) key instead of the EVM key; `--backup FILE` then
        /// writes a Solana CLI keypair file (a JSON array, mode 0600, not encrypted).
        #[arg(long)]
        solana: bool,
        /// Also write the key to FILE as an encrypted keystore (Web3 Secret Storage v3).
        #[arg(long, value_name = "FILE", conflicts_with = "no_backup")]
        backup: Option<PathBuf>,
        /// Accept that the key has no backup although the store loses it at reboot.
        #[arg(long)]
        no_backup: bool,
    },
    /// Store a key: 0x-hex from stdin (no echo on a terminal), or from a keystore file.
    Import {
        /// Replace an existing key; prints the old and the new address.
        #[arg(long)]
        replace: bool,
        /// Read an encrypted Web3 Secret Storage v3 keystore (geth, Foundry, eth-account).
        #[arg(long, value_name = "FILE", conflicts_with = "solana")]
        keystore: Option<PathBuf>,
        /// The Solana key: a base58 64-byte secret key or a Solana CLI keypair
        /// (JSON array of 64 numbers) from stdin, or from `--file`.
        #[arg(long)]
        solana: bool,
        /// With `--solana`: read a Solana CLI keypair file (`solana-keygen new -o FILE`).
        #[arg(long, value_name = "PATH", requires = "solana")]
        file: Option<PathBuf>,
    },
    /// Back the key up: an encrypted keystore file, or in clear to a terminal.
    Export {
        /// Write a Web3 Secret Storage v3 keystore (scrypt, AES-128-CTR) to FILE.
        #[arg(long, value_name = "FILE", required_unless_present = "plaintext")]
        keystore: Option<PathBuf>,
        /// Print the key in clear: only to a terminal, after typing `show`.
        #[arg(long, conflicts_with = "keystore")]
        plaintext: bool,
    },
    /// Print the wallet's addresses: the EVM one, then the Solana one (when each exists).
    Address {
        /// Print only the Solana address (base58).
        #[arg(long)]
        solana: bool,
    },
    /// Delete the key from the keyring.
    Remove {
        /// Confirm: the key cannot be recovered from x402d afterwards.
        #[arg(long)]
        yes: bool,
        /// Delete the Solana key (the EVM key stays).
        #[arg(long)]
        solana: bool,
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
    let l = loc.clone();
    let info = blocking(move || Ok(StoreInfo::for_location(&l))).await?;
    if loc.source == Source::SystemdCredential && !matches!(cmd, WalletCmd::Address { .. }) {
        return Err(CmdError(
            2,
            "wallet.source is \"systemd-credential\": create the credential with `systemd-creds encrypt` instead (see the README)".into(),
        ));
    }
    match cmd {
        WalletCmd::Address { solana: true } => {
            let l = loc.clone();
            let w = blocking(move || super::solana::load(&l)).await?;
            say(&w.address().to_string());
            eprintln!("Solana key in the {}", solana_info(&loc).await?.name);
            Ok(())
        }
        WalletCmd::Address { solana: false } => {
            let l = loc.clone();
            let evm = blocking(move || Ok(super::load(&l))).await?;
            let l = loc.clone();
            let sol = blocking(move || Ok(super::solana::load(&l))).await?;
            match (&evm, &sol) {
                (Err(e @ WalletError::Missing { .. }), Err(WalletError::MissingSolana { .. })) => {
                    return Err(e.clone().into());
                }
                (Err(e), _) if !matches!(e, WalletError::Missing { .. }) => {
                    return Err(e.clone().into());
                }
                (Err(_), Err(e)) if !matches!(e, WalletError::MissingSolana { .. }) => {
                    return Err(e.clone().into());
                }
                (Ok(_), Err(e)) if !matches!(e, WalletError::MissingSolana { .. }) => {
                    // The EVM key is still worth printing; the Solana entry is named.
                    eprintln!("warning: the Solana key: {e}");
                }
                _ => {}
            }
            if let Ok(w) = &evm {
                say(&format!("{}", w.address()));
                eprintln!("key in the {}", info.name);
            } else {
                eprintln!("no EVM key (`x402d wallet import` or `x402d wallet new`)");
            }
            if let Ok(w) = &sol {
                say(&w.address().to_string());
                eprintln!("Solana key in the {}", solana_info(&loc).await?.name);
            }
            eprintln!("{}", durability(&info));
            Ok(())
        }
        WalletCmd::New {
            solana: true,
            replace,
            backup,
            no_backup,
        } => new_solana(cfg, &loc, *replace, backup.as_deref(), *no_backup).await,
        WalletCmd::Import {
            solana: true,
            replace,
            file,
            ..
        } => {
            let key = match file {
                Some(f) => read_small_file(f)?,
                None => read_key("Solana secret key (base58 or [..64 numbers..], not echoed): ")?,
            };
            super::solana::SolanaWallet::parse(&key)?;
            let sol = super::solana::location(&loc);
            let sinfo = solana_info(&loc).await?;
            let b = KeyringBackend(sol);
            let replace = *replace;
            let put = blocking(move || ops::put_of::<ops::Solana>(&b, &key, replace)).await?;
            report_put_solana(cfg, &put, &sinfo).await
        }
        WalletCmd::Remove { yes, solana: true } => {
            let sinfo = solana_info(&loc).await?;
            if !yes {
                return Err(CmdError(
                    2,
                    format!(
                        "this deletes the Solana wallet key from the {}; run `x402d wallet remove --solana --yes` to confirm",
                        sinfo.name
                    ),
                ));
            }
            let b = KeyringBackend(super::solana::location(&loc));
            let removed = blocking(move || b.delete()).await?;
            if removed {
                eprintln!("removed the Solana wallet key from the {}", sinfo.name);
            } else {
                eprintln!("there was no Solana wallet key in the {}", sinfo.name);
            }
            tell_daemon_field(cfg, "solana_wallet", None).await
        }
        WalletCmd::New {
            solana: false,
            replace,
            backup,
            no_backup,
        } => {
            // An existing key is the first thing to say (and nothing is written).
            let l = loc.clone();
            if !replace && let Some(a) = blocking(move || ops::current(&KeyringBackend(l))).await? {
                return Err(WalletError::Exists {
                    address: a.to_string(),
                    store: info.name.clone(),
                }
                .into());
            }
            if !info.survives_reboot && backup.is_none() && !no_backup {
                return Err(CmdError(
                    2,
                    format!(
                        "refused: the {} keeps no key across a reboot, so a new key needs a backup. Run \
                         `x402d wallet new --backup FILE` (an encrypted keystore; restore it with \
                         `x402d wallet import --keystore FILE`), or add `--no-backup` to accept losing the key \
                         and its funds at the next reboot, or use the Secret Service (wallet.store = \"secret-service\")",
                        info.name
                    ),
                ));
            }
            let (w, hex) = Wallet::generate();
            if let Some(file) = backup {
                let pass = passphrase(true)?;
                write_keystore(file, &hex, &pass)?;
                eprintln!("wrote the encrypted backup {}", file.display());
            }
            let b = KeyringBackend(loc.clone());
            let replace = *replace;
            let put = blocking(move || ops::put(&b, &hex, replace)).await;
            let put = match put {
                Ok(p) => p,
                Err(e) => {
                    // The key was never reported: its backup must not outlive it.
                    if let Some(file) = backup {
                        let _ = std::fs::remove_file(file);
                    }
                    return Err(e);
                }
            };
            debug_assert_eq!(put.address, w.address());
            report_put(cfg, &put, &info).await
        }
        WalletCmd::Import {
            replace, keystore, ..
        } => {
            let key = match keystore {
                Some(file) => read_keystore(file)?,
                None => read_key("Private key (0x…, not echoed): ")?,
            };
            // Parse before touching the store: a typo never reaches it.
            Wallet::from_hex(&key)?;
            let b = KeyringBackend(loc.clone());
            let replace = *replace;
            let put = blocking(move || ops::put(&b, &key, replace)).await?;
            report_put(cfg, &put, &info).await
        }
        WalletCmd::Export {
            keystore,
            plaintext,
        } => {
            let l = loc.clone();
            let key = blocking(move || {
                let b = KeyringBackend(l.clone());
                b.read()?.ok_or(WalletError::Missing {
                    service: l.service.clone(),
                    user: l.user.clone(),
                })
            })
            .await?;
            let address = Wallet::from_hex(&key)?.address();
            match keystore {
                Some(file) => {
                    let pass = passphrase(true)?;
                    write_keystore(file, &key, &pass)?;
                    say(&format!("{address}"));
                    eprintln!(
                        "wrote {} (Web3 Secret Storage v3, scrypt N=2^{}, AES-128-CTR); restore with `x402d wallet import --keystore {}`; keep the passphrase: without it the file is useless",
                        file.display(),
                        keystore::LOG_N,
                        file.display()
                    );
                    Ok(())
                }
                None if *plaintext => show_plaintext(&key, address),
                None => Err(CmdError(
                    2,
                    "say where: `--keystore FILE` or `--plaintext`".into(),
                )),
            }
        }
        WalletCmd::Remove { yes, solana: false } => {
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
    tell_daemon_field(cfg, "wallet", expect).await
}

/// The keyring entry of the Solana key, in words.
async fn solana_info(loc: &super::KeyLocation) -> Result<StoreInfo, CmdError> {
    let l = super::solana::location(loc);
    blocking(move || Ok(StoreInfo::for_location(&l))).await
}

async fn new_solana(
    cfg: &Loaded,
    loc: &super::KeyLocation,
    replace: bool,
    backup: Option<&Path>,
    no_backup: bool,
) -> Result<(), CmdError> {
    let info = solana_info(loc).await?;
    let b = KeyringBackend(super::solana::location(loc));
    if !replace && let Some(a) = blocking(move || ops::current_of::<ops::Solana>(&b)).await? {
        return Err(WalletError::Exists {
            address: a.to_string(),
            store: info.name.clone(),
        }
        .into());
    }
    if !info.survives_reboot && backup.is_none() && !no_backup {
        return Err(CmdError(
            2,
            format!(
                "refused: the {} keeps no key across a reboot, so a new key needs a backup. Run \
                 `x402d wallet new --solana --backup FILE` (a Solana CLI keypair file; restore it with \
                 `x402d wallet import --solana --file FILE`), or add `--no-backup` to accept losing the key \
                 and its funds at the next reboot",
                info.name
            ),
        ));
    }
    let (w, stored) = super::solana::SolanaWallet::generate()?;
    if let Some(file) = backup {
        write_solana_keypair(file, &stored)?;
        eprintln!(
            "wrote the backup {} (Solana CLI keypair, not encrypted: keep it private)",
            file.display()
        );
    }
    let b = KeyringBackend(super::solana::location(loc));
    let put = blocking(move || ops::put_of::<ops::Solana>(&b, &stored, replace)).await;
    let put = match put {
        Ok(p) => p,
        Err(e) => {
            if let Some(file) = backup {
                let _ = std::fs::remove_file(file);
            }
            return Err(e);
        }
    };
    debug_assert_eq!(put.address, w.address());
    report_put_solana(cfg, &put, &info).await
}

/// Writes a Solana CLI keypair file (JSON array of 64 numbers), mode 0600,
/// never overwriting, and reads it back.
fn write_solana_keypair(file: &Path, stored: &str) -> Result<(), CmdError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = Zeroizing::new(
        bs58::decode(stored)
            .into_vec()
            .map_err(|_| WalletError::BadSolanaKey)?,
    );
    let doc =
        Zeroizing::new(serde_json::to_string(&*bytes).map_err(|e| CmdError(1, e.to_string()))?);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| {
            CmdError(
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    2
                } else {
                    1
                },
                format!(
                    "cannot create {} ({e}); nothing is overwritten",
                    file.display()
                ),
            )
        })?;
    let ok = f
        .write_all(doc.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CmdError(1, format!("cannot write {}: {e}", file.display())))
        .and_then(|()| {
            let back = read_small_file(file)?;
            match super::solana::canonical(&back) {
                Ok(k) if *k == *stored => Ok(()),
                _ => Err(CmdError(
                    1,
                    format!("{} does not hold the key", file.display()),
                )),
            }
        });
    if ok.is_err() {
        let _ = std::fs::remove_file(file);
    }
    ok
}

fn read_small_file(file: &Path) -> Result<Zeroizing<String>, CmdError> {
    let mut s = Zeroizing::new(String::new());
    std::fs::File::open(file)
        .and_then(|f| f.take(4096).read_to_string(&mut s))
        .map_err(|e| CmdError(1, format!("cannot read {}: {e}", file.display())))?;
    Ok(s)
}

async fn report_put_solana(
    cfg: &Loaded,
    put: &ops::Put<crate::x402::svm::Pubkey>,
    info: &StoreInfo,
) -> Result<(), CmdError> {
    say(&put.address.to_string());
    if put.unchanged {
        eprintln!("this Solana key was already stored in the {}", info.name);
    } else {
        if let Some(old) = put.replaced {
            eprintln!(
                "replaced the Solana wallet key: old {old}, new {}",
                put.address
            );
        }
        eprintln!(
            "stored in the {} and read back as the next command will",
            info.name
        );
    }
    eprintln!("{}", durability(info));
    tell_daemon_field(cfg, "solana_wallet", Some(put.address.to_string())).await
}

/// Makes a running daemon re-read its keys now, and checks that `field` of its
/// answer (`wallet`, `solana_wallet`) is what we stored.
async fn tell_daemon_field(
    cfg: &Loaded,
    field: &str,
    expect: Option<String>,
) -> Result<(), CmdError> {
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
            let using = v.get(field).and_then(Value::as_str).map(str::to_string);
            if using == expect {
                match &using {
                    Some(a) => eprintln!("the running x402d now pays with {a}"),
                    None => eprintln!("the running x402d has no key now: paid calls get 503"),
                }
                return Ok(());
            }
            let err_field = if field == "wallet" {
                "error"
            } else {
                "solana_error"
            };
            let why = v
                .get(err_field)
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

fn read_key(prompt: &str) -> Result<Zeroizing<String>, CmdError> {
    if std::io::stdin().is_terminal() {
        let k = rpassword::prompt_password(prompt)
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
            "no key on stdin; pipe a 0x-hex private key, e.g. `x402d wallet import < key.txt` (Solana: a base58 secret key, `x402d wallet import --solana < key.txt`)"
                .into(),
        ));
    }
    Ok(Zeroizing::new(s.trim().to_string()))
}

/// The keystore passphrase: `$X402D_KEYSTORE_PASSPHRASE`, else without echo
/// from the terminal (twice when `confirm`), else the first line of stdin.
fn passphrase(confirm: bool) -> Result<Zeroizing<String>, CmdError> {
    let p = if let Some(v) = std::env::var_os(PASSPHRASE_ENV) {
        Zeroizing::new(
            v.into_string()
                .map_err(|_| CmdError(2, format!("${PASSPHRASE_ENV} is not UTF-8")))?,
        )
    } else if std::io::stdin().is_terminal() {
        let p = Zeroizing::new(
            rpassword::prompt_password("Keystore passphrase (not echoed): ")
                .map_err(|e| CmdError(1, format!("cannot read the passphrase: {e}")))?,
        );
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Same passphrase again: ")
                    .map_err(|e| CmdError(1, format!("cannot read the passphrase: {e}")))?,
            );
            if *again != *p {
                return Err(CmdError(
                    2,
                    "the two passphrases differ; nothing written".into(),
                ));
            }
        }
        p
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .take(4096)
            .read_line(&mut line)
            .map_err(|e| CmdError(1, format!("cannot read the passphrase from stdin: {e}")))?;
        Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string())
    };
    if p.is_empty() {
        return Err(CmdError(
            2,
            format!(
                "empty passphrase; type one at the prompt, pipe it on stdin, or set ${PASSPHRASE_ENV}"
            ),
        ));
    }
    Ok(p)
}

/// Encrypts `key` to a new file (mode 0600, never overwriting), then reads the
/// file back and decrypts it: a backup that does not open is never reported.
fn write_keystore(file: &Path, key: &str, pass: &str) -> Result<(), CmdError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let w = Wallet::from_hex(key)?;
    let mut raw = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(super::canonical(key).trim_start_matches("0x"), raw.as_mut())
        .map_err(|_| WalletError::BadKey)?;
    let doc = keystore::encrypt(&raw, w.address(), pass.as_bytes(), keystore::LOG_N)
        .map_err(|e| CmdError(1, e.to_string()))?;
    let fail = |what: &str, e: std::io::Error| {
        CmdError(1, format!("cannot {what} {}: {e}", file.display()))
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CmdError(
                    2,
                    format!(
                        "{} exists; choose a new file name (nothing is overwritten)",
                        file.display()
                    ),
                )
            } else {
                fail("create", e)
            }
        })?;
    let written = f
        .write_all(doc.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("write", e));
    let checked = written.and_then(|()| {
        let back = std::fs::read(file).map_err(|e| fail("read back", e))?;
        let k = keystore::decrypt(&back, pass.as_bytes())
            .map_err(|e| CmdError(1, format!("{} does not open again: {e}", file.display())))?;
        if *k != *raw {
            return Err(CmdError(
                1,
                format!("{} does not hold the key", file.display()),
            ));
        }
        Ok(())
    });
    if checked.is_err() {
        let _ = std::fs::remove_file(file);
    }
    checked
}

fn read_keystore(file: &Path) -> Result<Zeroizing<String>, CmdError> {
    let mut doc = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(1 << 16).read_to_end(&mut doc))
        .map_err(|e| CmdError(1, format!("cannot read {}: {e}", file.display())))?;
    let pass = passphrase(false)?;
    let key = keystore::decrypt(&doc, pass.as_bytes())
        .map_err(|e| CmdError(1, format!("{}: {e}", file.display())))?;
    Ok(Zeroizing::new(format!("0x{}", hex::encode(*key))))
}

/// The key in clear, only on a terminal and after typing `show`.
fn show_plaintext(key: &str, address: alloy_primitives::Address) -> Result<(), CmdError> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(CmdError(
            2,
            "refused: the key is printed in clear only on a terminal (never to a file or a pipe); for a backup use `x402d wallet export --keystore FILE`".into(),
        ));
    }
    eprint!(
        "This prints the private key of {address} in clear on this terminal. Type `show` to go on: "
    );
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(64)
        .read_line(&mut line)
        .map_err(|e| CmdError(1, format!("cannot read the answer: {e}")))?;
    if line.trim() != "show" {
        return Err(CmdError(2, "not confirmed; nothing printed".into()));
    }
    say(&super::canonical(key));
    Ok(())
}
