//! `wallet new|import|address|export|remove`: the logic lives in `x402d::wallet::cmd`.

use super::{Cli, Fail, load_config};
use std::process::ExitCode;
use x402d::wallet;

pub(crate) async fn wallet_cmd(cli: &Cli, cmd: &wallet::cmd::WalletCmd) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    wallet::cmd::run(&cfg, cmd)
        .await
        .map_err(|wallet::cmd::CmdError(code, msg)| Fail(code, msg))?;
    Ok(ExitCode::SUCCESS)
}
