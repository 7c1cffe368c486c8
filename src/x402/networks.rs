//! Networks x402d can pay on and the one token it pays with on each: native USDC.
//! A requirement naming any other asset is refused: signing an EIP-3009
//! authorization for an unknown contract could move an unknown token.

use alloy_primitives::{Address, address};

/// A supported EVM network and its USDC contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// CAIP-2 id, e.g. `eip155:8453`.
    pub caip2: &'static str,
    /// x402 v1 name, e.g. `base`.
    pub v1_name: &'static str,
    pub chain_id: u64,
    pub usdc: Address,
    /// EIP-712 domain `name` of that USDC contract.
    pub eip712_name: &'static str,
    /// EIP-712 domain `version` of that USDC contract.
    pub eip712_version: &'static str,
    /// Public JSON-RPC endpoint used when `[payment.rpc]` names none.
    pub default_rpc: &'static str,
}

/// USDC contracts (6 decimals), checked against Circle's published addresses.
pub const NETWORKS: &[Network] = &[
    Network {
        caip2: "eip155:8453",
        v1_name: "base",
        chain_id: 8453,
        usdc: address!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
        eip712_name: "USD Coin",
        eip712_version: "2",
        default_rpc: "https://mainnet.base.org",
    },
    Network {
        caip2: "eip155:84532",
        v1_name: "base-sepolia",
        chain_id: 84532,
        usdc: address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
        eip712_name: "USDC",
        eip712_version: "2",
        default_rpc: "https://sepolia.base.org",
    },
    Network {
        caip2: "eip155:137",
        v1_name: "polygon",
        chain_id: 137,
        usdc: address!("0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359"),
        eip712_name: "USD Coin",
        eip712_version: "2",
        default_rpc: "https://polygon-rpc.com",
    },
    Network {
        caip2: "eip155:42161",
        v1_name: "arbitrum",
        chain_id: 42161,
        usdc: address!("0xaf88d065e77c8cC2239327C5EDb3A432268e5831"),
        eip712_name: "USD Coin",
        eip712_version: "2",
        default_rpc: "https://arb1.arbitrum.io/rpc",
    },
];

/// Looks a network up by CAIP-2 id or v1 name (`arbitrum-one` is accepted too).
pub fn lookup(name: &str) -> Option<&'static Network> {
    let name = name.trim();
    let name = if name.eq_ignore_ascii_case("arbitrum-one") {
        "arbitrum"
    } else {
        name
    };
    NETWORKS
        .iter()
        .find(|n| n.caip2 == name || n.v1_name.eq_ignore_ascii_case(name))
}

/// All accepted spellings, for error messages.
pub fn known_names() -> String {
    NETWORKS
        .iter()
        .map(|n| format!("{} ({})", n.caip2, n.v1_name))
        .chain(
            SVM_NETWORKS
                .iter()
                .map(|n| format!("{} ({})", n.caip2, n.v1_name)),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// A supported Solana cluster and its USDC mint (SPL Token program, 6 decimals).
/// Payments there are `exact` SVM transactions (see `x402::svm`), not EIP-3009.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvmNetwork {
    /// CAIP-2 id: `solana:` and the first 32 characters of the genesis hash.
    pub caip2: &'static str,
    /// x402 v1 name, e.g. `solana-devnet`.
    pub v1_name: &'static str,
    /// USDC mint, base58.
    pub usdc_mint: &'static str,
    /// Public JSON-RPC endpoint used when `[payment.rpc]` names none.
    pub default_rpc: &'static str,
}

/// Circle's USDC mints, as `@x402/svm` 2.27 lists them.
pub const SVM_NETWORKS: &[SvmNetwork] = &[
    SvmNetwork {
        caip2: "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
        v1_name: "solana",
        usdc_mint: "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        default_rpc: "https://api.mainnet-beta.solana.com",
    },
    SvmNetwork {
        caip2: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        v1_name: "solana-devnet",
        usdc_mint: "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
        default_rpc: "https://api.devnet.solana.com",
    },
];

/// Looks a Solana network up by CAIP-2 id or v1 name.
pub fn lookup_svm(name: &str) -> Option<&'static SvmNetwork> {
    let name = name.trim();
    SVM_NETWORKS
        .iter()
        .find(|n| n.caip2 == name || n.v1_name.eq_ignore_ascii_case(name))
}

/// The CAIP-2 id of any supported network (EVM or Solana), by any spelling.
pub fn caip2_of(name: &str) -> Option<&'static str> {
    lookup(name)
        .map(|n| n.caip2)
        .or_else(|| lookup_svm(name).map(|n| n.caip2))
}

/// The v1 name of any supported network, by CAIP-2 id.
pub fn v1_name_of(caip2: &str) -> Option<&'static str> {
    lookup(caip2)
        .map(|n| n.v1_name)
        .or_else(|| lookup_svm(caip2).map(|n| n.v1_name))
}

/// A block-explorer link for a transaction on a CAIP-2 network, when the hash
/// is a well-formed 32-byte hex hash (it comes from the seller's header).
pub fn explorer_tx_url(caip2: &str, tx: &str) -> Option<String> {
    let base = match caip2 {
        "eip155:8453" => "https://basescan.org/tx/",
        "eip155:84532" => "https://sepolia.basescan.org/tx/",
        "eip155:137" => "https://polygonscan.com/tx/",
        "eip155:42161" => "https://arbiscan.io/tx/",
        "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp" | "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1" => {
            // A transaction signature: 64 bytes in base58.
            let ok = bs58::decode(tx).into_vec().is_ok_and(|b| b.len() == 64);
            let cluster = if caip2.ends_with("EtWTRABZaYq6iMfeYKouRu166VU2xqa1") {
                "?cluster=devnet"
            } else {
                ""
            };
            return ok.then(|| format!("https://explorer.solana.com/tx/{tx}{cluster}"));
        }
        _ => return None,
    };
    let hex = tx.strip_prefix("0x")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("{base}{tx}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(lookup("base").unwrap().chain_id, 8453);
        assert_eq!(lookup("eip155:84532").unwrap().v1_name, "base-sepolia");
        assert_eq!(lookup("arbitrum-one").unwrap().chain_id, 42161);
        assert!(lookup("eip155:1").is_none());
        assert!(lookup("solana").is_none());
        assert_eq!(
            lookup_svm("solana").unwrap().caip2,
            "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
        );
        assert_eq!(
            lookup_svm("solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1")
                .unwrap()
                .v1_name,
            "solana-devnet"
        );
        assert!(lookup_svm("solana-testnet").is_none());
        assert!(lookup_svm("base").is_none());
        assert_eq!(
            caip2_of("solana-devnet"),
            Some("solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1")
        );
        assert_eq!(caip2_of("base"), Some("eip155:8453"));
        for n in SVM_NETWORKS {
            assert_eq!(bs58::decode(n.usdc_mint).into_vec().unwrap().len(), 32);
        }
    }

    #[test]
    fn explorer_links_only_for_real_hashes() {
        let h = format!("0x{}", "ab".repeat(32));
        assert_eq!(
            explorer_tx_url("eip155:8453", &h),
            Some(format!("https://basescan.org/tx/{h}"))
        );
        for n in NETWORKS {
            assert!(explorer_tx_url(n.caip2, &h).is_some(), "{}", n.caip2);
        }
        assert_eq!(explorer_tx_url("eip155:1", &h), None);
        assert_eq!(explorer_tx_url("eip155:8453", "javascript:alert(1)"), None);
        assert_eq!(explorer_tx_url("eip155:8453", "0xabc"), None);
        let sig = bs58::encode([3u8; 64]).into_string();
        assert_eq!(
            explorer_tx_url("solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", &sig),
            Some(format!(
                "https://explorer.solana.com/tx/{sig}?cluster=devnet"
            ))
        );
        assert_eq!(
            explorer_tx_url("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", &sig),
            Some(format!("https://explorer.solana.com/tx/{sig}"))
        );
        assert_eq!(
            explorer_tx_url("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", &h),
            None
        );
    }

    #[test]
    fn chain_ids_match_caip2() {
        for n in NETWORKS {
            assert_eq!(n.caip2, format!("eip155:{}", n.chain_id));
        }
    }
}
