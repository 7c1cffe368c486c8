//! `wallet new|import|address|remove`.

use super::{Cli, Fail, WalletCmd, load_config};
use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use x402d::wallet;
use zeroize::Zeroizing;

pub(crate) async fn wallet_cmd(cli: &Cli, cmd: &WalletCmd) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    let loc = cfg.key_location();
    if loc.source == wallet::Source::SystemdCredential && !matches!(cmd, WalletCmd::Address) {
        return Err(Fail(
            2,
            "wallet.source is \"systemd-credential\": create the credential with `systemd-creds encrypt` instead (see the README)".into(),
        ));
    }
    let where_ = format!(
        "keyring entry (service {:?}, user {:?})",
        loc.service, loc.user
    );
    let blocking = |f: Box<dyn FnOnce() -> Result<String, Fail> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Fail(1, e.to_string()))?
    };
    let out = match cmd {
        WalletCmd::New => {
            let loc = loc.clone();
            blocking(Box::new(move || {
                match wallet::load(&loc) {
                    Ok(w) => {
                        return Err(Fail(
                            1,
                            format!(
                                "a wallet already exists ({}); remove it first with `x402d wallet remove --yes` (this destroys the key: move its funds first)",
                                w.address()
                            ),
                        ));
                    }
                    Err(wallet::WalletError::Missing { .. }) => {}
                    Err(e) => return Err(Fail(1, e.to_string())),
                }
                let (w, hex) = wallet::Wallet::generate();
                wallet::store(&loc, &hex)?;
                Ok(format!("{}", w.address()))
            }))
            .await?
        }
        WalletCmd::Import => {
            let key = read_key()?;
            let loc = loc.clone();
            blocking(Box::new(move || Ok(wallet::store(&loc, &key)?.to_string()))).await?
        }
        WalletCmd::Address => {
            let loc = loc.clone();
            blocking(Box::new(move || match wallet::load(&loc) {
                Ok(w) => Ok(w.address().to_string()),
                Err(e) => Err(Fail(1, e.to_string())),
            }))
            .await?
        }
        WalletCmd::Remove { yes } => {
            if !yes {
                return Err(Fail(
                    2,
                    format!(
                        "this deletes the wallet key from the {where_}; run `x402d wallet remove --yes` to confirm"
                    ),
                ));
            }
            let loc = loc.clone();
            let removed = blocking(Box::new(move || Ok(wallet::remove(&loc)?.to_string()))).await?;
            if removed == "true" {
                eprintln!("removed the wallet key from the {where_}");
            } else {
                eprintln!("there was no wallet key in the {where_}");
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    outln!("{out}");
    if matches!(cmd, WalletCmd::New | WalletCmd::Import) {
        eprintln!("stored in the {where_}; a running x402d picks it up on the next call");
    }
    Ok(ExitCode::SUCCESS)
}

fn read_key() -> Result<Zeroizing<String>, Fail> {
    if std::io::stdin().is_terminal() {
        let k = rpassword::prompt_password("Private key (0x…, not echoed): ")
            .map_err(|e| Fail(1, format!("cannot read the key: {e}")))?;
        return Ok(Zeroizing::new(k));
    }
    let mut s = Zeroizing::new(String::new());
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut s)
        .map_err(|e| Fail(1, format!("cannot read the key from stdin: {e}")))?;
    if s.trim().is_empty() {
        return Err(Fail(
            2,
            "no key on stdin; pipe a 0x-hex private key, e.g. `x402d wallet import < key.txt`"
                .into(),
        ));
    }
    Ok(Zeroizing::new(s.trim().to_string()))
}
