//! EIP-712 `TransferWithAuthorization` (EIP-3009) hashing and signing. Pure code:
//! the golden vectors in the tests pin it byte for byte.

use crate::x402::header::Authorization;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use std::borrow::Cow;

sol! {
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// The token's EIP-712 domain.
pub fn domain(name: &str, version: &str, chain_id: u64, contract: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(Cow::Owned(name.to_string())),
        Some(Cow::Owned(version.to_string())),
        Some(U256::from(chain_id)),
        Some(contract),
        None,
    )
}

/// The digest the wallet signs.
pub fn signing_hash(auth: &Authorization, domain: &Eip712Domain) -> B256 {
    let msg = TransferWithAuthorization {
        from: auth.from,
        to: auth.to,
        value: auth.value,
        validAfter: U256::from(auth.valid_after),
        validBefore: U256::from(auth.valid_before),
        nonce: auth.nonce,
    };
    msg.eip712_signing_hash(domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{address, b256};
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    // Golden vector (shared/vectors.md), cross-checked with Python eth-account 0.14.0.
    // anvil dev key #0: a public test key, never funded on a real chain.
    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn vector() -> (Authorization, Eip712Domain) {
        let auth = Authorization {
            from: address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
            to: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            value: U256::from(10_000),
            valid_after: 0,
            valid_before: 1_900_000_000,
            nonce: B256::repeat_byte(0x01),
        };
        let d = domain(
            "USD Coin",
            "2",
            8453,
            address!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
        );
        (auth, d)
    }

    #[test]
    fn golden_type_hash_and_domain() {
        let (_, d) = vector();
        let msg = TransferWithAuthorization {
            from: Address::ZERO,
            to: Address::ZERO,
            value: U256::ZERO,
            validAfter: U256::ZERO,
            validBefore: U256::ZERO,
            nonce: B256::ZERO,
        };
        assert_eq!(
            msg.eip712_type_hash(),
            b256!("0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267")
        );
        assert_eq!(
            d.separator(),
            b256!("0x02fa7265e7c5d81118673727957699e4d68f74cd74b7db77da710fe8a2c7834f")
        );
    }

    #[test]
    fn golden_signing_hash_and_signature() {
        let (auth, d) = vector();
        let hash = signing_hash(&auth, &d);
        assert_eq!(
            hash,
            b256!("0x3a9a31ba1e8bfa16d612dbc9d768af94bc40fe1b0a03f2906eeb128c33f4224d")
        );
        let signer: PrivateKeySigner = KEY.parse().unwrap();
        assert_eq!(signer.address(), auth.from);
        let sig = signer.sign_hash_sync(&hash).unwrap();
        assert_eq!(
            hex::encode(sig.as_bytes()),
            "45eaeaf409196a6604d2ad0128416c4cf3962746bb56bec7496f90125720cae95e036f0c9a225601cd32a5dd90eaa230e2f853c463c829ffe0ee6817eb5afc0a1c"
        );
        assert_eq!(
            sig.recover_address_from_prehash(&hash).unwrap(),
            signer.address()
        );
        // Through the wallet type as well.
        let w = super::super::Wallet::from_hex(KEY).unwrap();
        assert_eq!(w.sign(&auth, &d).unwrap(), sig.as_bytes());
    }
}
