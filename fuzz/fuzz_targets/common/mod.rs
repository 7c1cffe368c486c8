//! What every parse_402 target checks: parsing and choosing never panic, errors
//! stay short (they reach the app and the log), and whatever `choose` accepts
//! obeys every wallet rule, with the signed amount equal to the offered text.

use alloy_primitives::{Address, B256, U256, address};
use x402d::money::Usd;
use x402d::x402::header::{Authorization, encode_payment};
use x402d::x402::networks::{self, NETWORKS};
use x402d::x402::parse::{MAX_ACCEPTS, PaymentRequired, parse_402};
use x402d::x402::select::{Policy, choose, parse_amount};

const PAY_TO: Address = address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");

fn policies() -> [Policy; 2] {
    [
        // The shape of the defaults: two networks, a small ceiling, no recipient list.
        Policy {
            networks: vec![
                networks::lookup("eip155:84532").unwrap(),
                networks::lookup("eip155:8453").unwrap(),
            ],
            ceiling: Usd(50_000),
            max_timeout_seconds: 3600,
            pay_to: None,
        },
        // Everything allowed, no effective ceiling, one recipient.
        Policy {
            networks: NETWORKS.iter().collect(),
            ceiling: Usd(u64::MAX),
            max_timeout_seconds: 86_400,
            pay_to: Some(vec![PAY_TO]),
        },
    ]
}

/// Parses like the proxy does, then chooses under each policy and checks the result.
pub fn run(header: Option<&[u8]>, body: &[u8]) {
    let pr = match parse_402(header, body) {
        Ok(pr) => pr,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.len() < 512, "parse error is {} bytes: {msg}", msg.len());
            return;
        }
    };
    check(&pr);
}

fn check(pr: &PaymentRequired) {
    assert!(!pr.accepts.is_empty() && pr.accepts.len() <= MAX_ACCEPTS);
    if let Some(e) = &pr.error {
        assert!(e.len() <= 300 + '…'.len_utf8());
    }
    for policy in policies() {
        match choose(pr, &policy) {
            Err(refusals) => {
                assert_eq!(refusals.len(), pr.accepts.len(), "one refusal per option");
                for r in &refusals {
                    let s = r.to_string();
                    assert!(s.len() < 1024, "refusal is {} bytes: {s}", s.len());
                }
            }
            Ok(c) => {
                let r = &c.requirement;
                assert_eq!(r.scheme, "exact");
                // The amount reserved and signed is exactly the offered text, within bounds.
                assert!(c.amount > Usd::ZERO && c.amount <= policy.ceiling);
                assert_eq!(parse_amount(&r.amount), Ok(U256::from(c.amount.atomic())));
                assert_eq!(r.amount, c.amount.atomic().to_string());
                assert!(policy.networks.iter().any(|n| n.caip2 == c.network.caip2));
                assert_eq!(
                    networks::lookup(&r.network).map(|n| n.caip2),
                    Some(c.network.caip2)
                );
                assert_eq!(r.asset.parse::<Address>().ok(), Some(c.network.usdc));
                assert_eq!(r.extra_name.as_deref(), Some(c.network.eip712_name));
                assert_eq!(r.extra_version.as_deref(), Some(c.network.eip712_version));
                assert_eq!(r.pay_to.parse::<Address>().ok(), Some(c.pay_to));
                assert_ne!(c.pay_to, Address::ZERO);
                if let Some(allow) = &policy.pay_to {
                    assert!(allow.contains(&c.pay_to));
                }
                assert!((1..=policy.max_timeout_seconds).contains(&c.timeout_seconds));
                // Encoding the payment header never panics and is a valid header value.
                let auth = Authorization {
                    from: Address::repeat_byte(0x11),
                    to: c.pay_to,
                    value: U256::from(c.amount.atomic()),
                    valid_after: 0,
                    valid_before: 1_800_000_000 + c.timeout_seconds,
                    nonce: B256::repeat_byte(0xab),
                };
                let h = encode_payment(pr, &c, &auth, &[7u8; 65]);
                assert!(
                    h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
                );
            }
        }
    }
}
