//! Choosing which offered requirement to pay, if any. Every rule that protects
//! the wallet lives here, and the amount that passes the ceiling is the exact
//! integer that gets signed and reserved (there is no second parse).

use super::networks::{self, Network, SvmNetwork};
use super::parse::{PaymentRequired, Requirement};
use super::svm::{self, Pubkey};
use crate::money::Usd;
use alloy_primitives::{Address, U256};
use std::fmt;

/// What we are willing to pay, decided by config and the calling app.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Allowed networks, most preferred first.
    pub networks: Vec<&'static Network>,
    /// Highest price for a single call (the smaller of the global and the app's ceiling).
    pub ceiling: Usd,
    /// Longest authorization validity we sign.
    pub max_timeout_seconds: u64,
    /// When set, the only recipients we pay.
    pub pay_to: Option<Vec<Address>>,
}

/// The requirement we will pay, with its fields checked and parsed.
#[derive(Debug, Clone)]
pub struct Choice {
    pub requirement: Requirement,
    pub network: &'static Network,
    /// The amount that is reserved and signed.
    pub amount: Usd,
    pub pay_to: Address,
    pub timeout_seconds: u64,
}

/// Why one offered option was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Short description of what was offered.
    pub offered: String,
    pub reason: String,
    /// True when the only problem was the price ceiling.
    pub over_ceiling: bool,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.offered, self.reason)
    }
}

/// The Solana side of the policy, and the preference order across all networks.
#[derive(Debug, Clone, Default)]
pub struct SvmPolicy {
    /// Allowed Solana networks.
    pub networks: Vec<&'static SvmNetwork>,
    /// CAIP-2 ids of every allowed network (EVM and Solana), most preferred first
    /// (`payment.networks` order).
    pub order: Vec<&'static str>,
    /// When set, the only Solana recipients we pay.
    pub pay_to: Option<Vec<Pubkey>>,
}

/// A Solana requirement we will pay, with its terms checked.
#[derive(Debug, Clone)]
pub struct SvmChoice {
    pub requirement: Requirement,
    pub network: &'static SvmNetwork,
    /// The amount that is reserved and signed.
    pub amount: Usd,
    pub terms: svm::Terms,
}

/// The option to pay, on either kind of network.
#[derive(Debug, Clone)]
pub enum Chosen {
    Evm(Choice),
    Svm(SvmChoice),
}

impl Chosen {
    pub fn caip2(&self) -> &'static str {
        match self {
            Chosen::Evm(c) => c.network.caip2,
            Chosen::Svm(c) => c.network.caip2,
        }
    }
    pub fn amount(&self) -> Usd {
        match self {
            Chosen::Evm(c) => c.amount,
            Chosen::Svm(c) => c.amount,
        }
    }
}

/// Picks the cheapest acceptable option on the most preferred network, EVM or
/// Solana, in `svm.order`.
pub fn choose_any(
    pr: &PaymentRequired,
    policy: &Policy,
    svm_policy: &SvmPolicy,
) -> Result<Chosen, Vec<Refusal>> {
    let mut refusals = Vec::new();
    let mut best: Option<(usize, Chosen)> = None;
    for (i, offer) in pr.accepts.iter().enumerate() {
        let req = match offer {
            Ok(r) => r,
            Err(why) => {
                refusals.push(Refusal {
                    offered: format!("option {}", i + 1),
                    reason: format!("unreadable ({why})"),
                    over_ceiling: false,
                });
                continue;
            }
        };
        let checked = match networks::lookup_svm(&req.network) {
            Some(net) => check_svm(req, net, policy.ceiling, svm_policy).map(Chosen::Svm),
            None => check(req, policy).map(Chosen::Evm),
        };
        match checked {
            Ok(choice) => {
                let rank = svm_policy
                    .order
                    .iter()
                    .position(|n| *n == choice.caip2())
                    .unwrap_or(usize::MAX);
                let better = match &best {
                    None => true,
                    Some((r, c)) => rank < *r || (rank == *r && choice.amount() < c.amount()),
                };
                if better {
                    best = Some((rank, choice));
                }
            }
            Err((reason, over_ceiling)) => refusals.push(Refusal {
                offered: describe(req),
                reason,
                over_ceiling,
            }),
        }
    }
    best.map(|(_, c)| c).ok_or(refusals)
}

fn check_svm(
    r: &Requirement,
    net: &'static SvmNetwork,
    ceiling: Usd,
    p: &SvmPolicy,
) -> Result<SvmChoice, (String, bool)> {
    if r.scheme != "exact" {
        return Err((
            format!(
                "scheme {:?} is not supported (only \"exact\")",
                clip(&r.scheme)
            ),
            false,
        ));
    }
    if !p.networks.iter().any(|n| n.caip2 == net.caip2) {
        return Err((
            format!(
                "network {} is not in payment.networks {:?}",
                net.caip2, p.order
            ),
            false,
        ));
    }
    let terms = svm::terms(r, net).map_err(|e| (e.to_string(), false))?;
    if let Some(allow) = &p.pay_to
        && !allow.contains(&terms.pay_to)
    {
        return Err((
            format!("payTo {} is not in payment.pay_to", terms.pay_to),
            false,
        ));
    }
    let amount = Usd(terms.amount);
    if amount > ceiling {
        return Err((
            format!(
                "price {} atomic units is above the per-call ceiling ${ceiling}",
                terms.amount
            ),
            true,
        ));
    }
    Ok(SvmChoice {
        requirement: r.clone(),
        network: net,
        amount,
        terms,
    })
}

/// Picks the cheapest acceptable option on the most preferred network.
pub fn choose(pr: &PaymentRequired, policy: &Policy) -> Result<Choice, Vec<Refusal>> {
    let mut refusals = Vec::new();
    let mut best: Option<(usize, Choice)> = None;
    for (i, offer) in pr.accepts.iter().enumerate() {
        let req = match offer {
            Ok(r) => r,
            Err(why) => {
                refusals.push(Refusal {
                    offered: format!("option {}", i + 1),
                    reason: format!("unreadable ({why})"),
                    over_ceiling: false,
                });
                continue;
            }
        };
        match check(req, policy) {
            Ok(choice) => {
                let rank = policy
                    .networks
                    .iter()
                    .position(|n| n.caip2 == choice.network.caip2)
                    .unwrap_or(usize::MAX);
                let better = match &best {
                    None => true,
                    Some((r, c)) => rank < *r || (rank == *r && choice.amount < c.amount),
                };
                if better {
                    best = Some((rank, choice));
                }
            }
            Err((reason, over_ceiling)) => refusals.push(Refusal {
                offered: describe(req),
                reason,
                over_ceiling,
            }),
        }
    }
    best.map(|(_, c)| c).ok_or(refusals)
}

fn describe(r: &Requirement) -> String {
    let price = parse_amount(&r.amount)
        .ok()
        .and_then(|a| u64::try_from(a).ok())
        .map(|a| format!("${}", Usd(a)))
        .unwrap_or_else(|| format!("amount {:?}", clip(&r.amount)));
    format!(
        "{} {} on {} to {}",
        clip(&r.scheme),
        price,
        clip(&r.network),
        clip(&r.pay_to)
    )
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(48).collect();
    if s.chars().count() > 48 {
        out.push('…');
    }
    out
}

fn check(r: &Requirement, p: &Policy) -> Result<Choice, (String, bool)> {
    let refuse = |s: String| Err((s, false));
    if r.scheme != "exact" {
        return refuse(format!(
            "scheme {:?} is not supported (only \"exact\")",
            clip(&r.scheme)
        ));
    }
    let Some(net) = networks::lookup(&r.network) else {
        return refuse(format!(
            "network {:?} is unknown (x402d pays on {})",
            clip(&r.network),
            networks::known_names()
        ));
    };
    if !p.networks.iter().any(|n| n.caip2 == net.caip2) {
        let allowed: Vec<_> = p.networks.iter().map(|n| n.caip2).collect();
        return refuse(format!(
            "network {} is not in payment.networks {:?}",
            net.caip2, allowed
        ));
    }
    let asset: Address = match r.asset.parse() {
        Ok(a) => a,
        Err(_) => return refuse(format!("asset {:?} is not an address", clip(&r.asset))),
    };
    if asset != net.usdc {
        return refuse(format!(
            "asset {asset} is not USDC on {} (expected {})",
            net.caip2, net.usdc
        ));
    }
    match (&r.extra_name, &r.extra_version) {
        (Some(n), Some(v)) if n == net.eip712_name && v == net.eip712_version => {}
        (n, v) => {
            return refuse(format!(
                "token domain name/version {:?}/{:?} does not match USDC on {} ({:?}/{:?})",
                n.as_deref().map(clip),
                v.as_deref().map(clip),
                net.caip2,
                net.eip712_name,
                net.eip712_version
            ));
        }
    }
    let pay_to: Address = match r.pay_to.parse() {
        Ok(a) => a,
        Err(_) => return refuse(format!("payTo {:?} is not an address", clip(&r.pay_to))),
    };
    if pay_to == Address::ZERO {
        return refuse("payTo is the zero address".into());
    }
    if let Some(allow) = &p.pay_to
        && !allow.contains(&pay_to)
    {
        return refuse(format!("payTo {pay_to} is not in payment.pay_to"));
    }
    if r.max_timeout_seconds == 0 {
        return refuse("maxTimeoutSeconds is 0 (a payment must stay valid for some time)".into());
    }
    let amount = match parse_amount(&r.amount) {
        Ok(a) => a,
        Err(why) => return refuse(why),
    };
    if amount.is_zero() {
        return refuse("amount is zero".into());
    }
    // Anything beyond u64 is far beyond any ceiling.
    let amount = match u64::try_from(amount) {
        Ok(a) if Usd(a) <= p.ceiling => Usd(a),
        _ => {
            return Err((
                format!(
                    "price {} atomic units is above the per-call ceiling ${}",
                    amount, p.ceiling
                ),
                true,
            ));
        }
    };
    Ok(Choice {
        requirement: r.clone(),
        network: net,
        amount,
        pay_to,
        // A seller that allows a longer validity than our policy still accepts a
        // shorter one: sign for the shorter.
        timeout_seconds: r.max_timeout_seconds.min(p.max_timeout_seconds),
    })
}

/// A canonical unsigned decimal integer: digits only, no sign, no leading zeros, ≤ 78 digits.
pub fn parse_amount(s: &str) -> Result<U256, String> {
    if s.is_empty() {
        return Err("amount is empty".into());
    }
    if s.len() > 78 {
        return Err("amount has more than 78 digits".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "amount {:?} is not a plain decimal integer",
            clip(s)
        ));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(format!("amount {:?} has leading zeros", clip(s)));
    }
    U256::from_str_radix(s, 10).map_err(|_| format!("amount {:?} overflows uint256", clip(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::parse::parse_402;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            networks: vec![
                networks::lookup("eip155:84532").unwrap(),
                networks::lookup("eip155:8453").unwrap(),
            ],
            ceiling: Usd::parse("0.50").unwrap(),
            max_timeout_seconds: 3600,
            pay_to: None,
        }
    }

    fn good(net: &str, amount: &str) -> serde_json::Value {
        let n = networks::lookup(net).unwrap();
        json!({"scheme":"exact","network":net,"amount":amount,"asset":n.usdc.to_string(),
               "payTo":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC","maxTimeoutSeconds":300,
               "extra":{"name":n.eip712_name,"version":n.eip712_version}})
    }

    fn pr(accepts: Vec<serde_json::Value>) -> PaymentRequired {
        let doc = json!({"x402Version":2,"accepts":accepts}).to_string();
        parse_402(None, doc.as_bytes()).unwrap()
    }

    fn refuse(offer: serde_json::Value, p: &Policy) -> String {
        let r = choose(&pr(vec![offer]), p).unwrap_err();
        assert_eq!(r.len(), 1);
        r[0].reason.clone()
    }

    #[test]
    fn picks_preferred_network_then_cheapest() {
        let c = choose(
            &pr(vec![
                good("eip155:8453", "500"),
                good("eip155:84532", "2000"),
                good("eip155:84532", "1000"),
            ]),
            &policy(),
        )
        .unwrap();
        assert_eq!(c.network.caip2, "eip155:84532");
        assert_eq!(c.amount, Usd(1000));
    }

    #[test]
    fn ceiling_is_checked_on_the_selected_option() {
        // The first option is cheap but unpayable; the payable one is over the ceiling.
        let mut cheap_wrong = good("eip155:84532", "1");
        cheap_wrong["asset"] = json!("0x0000000000000000000000000000000000000001");
        let r = choose(
            &pr(vec![cheap_wrong, good("eip155:84532", "500001")]),
            &policy(),
        )
        .unwrap_err();
        assert!(r[1].over_ceiling, "{r:?}");
        assert!(r[1].reason.contains("ceiling $0.5"), "{r:?}");
        // Exactly at the ceiling passes.
        let c = choose(&pr(vec![good("eip155:84532", "500000")]), &policy()).unwrap();
        assert_eq!(c.amount, Usd(500_000));
    }

    #[test]
    fn each_refusal_reason() {
        let p = policy();
        let mut o = good("eip155:84532", "1000");
        o["scheme"] = json!("upto");
        assert!(refuse(o, &p).contains("scheme"));
        let mut o = good("eip155:84532", "1000");
        o["network"] = json!("eip155:1");
        assert!(refuse(o, &p).contains("unknown"));
        assert!(refuse(good("eip155:137", "1000"), &p).contains("not in payment.networks"));
        let mut o = good("eip155:84532", "1000");
        o["asset"] = json!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
        assert!(refuse(o, &p).contains("is not USDC"));
        let mut o = good("eip155:84532", "1000");
        o["extra"]["name"] = json!("USD Coin");
        assert!(refuse(o, &p).contains("domain"));
        let mut o = good("eip155:84532", "1000");
        o["extra"] = json!(null);
        assert!(refuse(o, &p).contains("domain"));
        let mut o = good("eip155:84532", "1000");
        o["payTo"] = json!("0x0000000000000000000000000000000000000000");
        assert!(refuse(o, &p).contains("zero address"));
        let mut o = good("eip155:84532", "1000");
        o["payTo"] = json!("me");
        assert!(refuse(o, &p).contains("not an address"));
        let mut o = good("eip155:84532", "1000");
        o["maxTimeoutSeconds"] = json!(0);
        assert!(refuse(o, &p).contains("maxTimeoutSeconds"));
        for bad in ["", "-1", "+1", "0x10", " 1", "1.5", "01", "1e6"] {
            let why = refuse(good("eip155:84532", bad), &p);
            assert!(why.contains("amount"), "{bad:?}: {why}");
        }
        assert!(refuse(good("eip155:84532", "0"), &p).contains("zero"));
        let huge = "9".repeat(78);
        assert!(refuse(good("eip155:84532", &huge), &p).contains("uint256"));
        let big = "1".repeat(40);
        assert!(refuse(good("eip155:84532", &big), &p).contains("ceiling"));
        assert!(refuse(good("eip155:84532", &"1".repeat(79)), &p).contains("78"));
        let mut p2 = policy();
        p2.pay_to = Some(vec![Address::repeat_byte(7)]);
        assert!(refuse(good("eip155:84532", "1000"), &p2).contains("payment.pay_to"));
    }

    #[test]
    fn a_longer_validity_than_policy_is_signed_shorter() {
        let mut o = good("eip155:84532", "1000");
        o["maxTimeoutSeconds"] = json!(86400);
        let c = choose(&pr(vec![o]), &policy()).unwrap();
        assert_eq!(c.timeout_seconds, 3600, "policy's maximum, not the offer's");
        // A shorter offer keeps its own.
        let c = choose(&pr(vec![good("eip155:84532", "1000")]), &policy()).unwrap();
        assert_eq!(c.timeout_seconds, 300);
    }

    fn svm_offer(net: &str, amount: &str) -> serde_json::Value {
        let n = networks::lookup_svm(net).unwrap();
        json!({"scheme":"exact","network":n.caip2,"amount":amount,"asset":n.usdc_mint,
               "payTo":"2wKupLR9q6wXYppw8Gr2NvWxKBUqm4PPJKkQfoxHDBg4","maxTimeoutSeconds":60,
               "extra":{"feePayer":"CKPKJWNdJEqa81x7CkZ14BVPiY6y16Sxs7owznqtWYp5"}})
    }

    fn svm_policy(order: &[&str]) -> SvmPolicy {
        SvmPolicy {
            networks: order
                .iter()
                .filter_map(|n| networks::lookup_svm(n))
                .collect(),
            order: order
                .iter()
                .map(|n| networks::caip2_of(n).unwrap())
                .collect(),
            pay_to: None,
        }
    }

    #[test]
    fn evm_and_solana_are_ranked_by_payment_networks_order() {
        let offers = pr(vec![
            good("eip155:84532", "1000"),
            svm_offer("solana-devnet", "2000"),
        ]);
        let c = choose_any(
            &offers,
            &policy(),
            &svm_policy(&["solana-devnet", "base-sepolia"]),
        )
        .unwrap();
        let Chosen::Svm(s) = c else { panic!("{c:?}") };
        assert_eq!(s.network.v1_name, "solana-devnet");
        assert_eq!(s.amount, Usd(2000));
        let c = choose_any(
            &offers,
            &policy(),
            &svm_policy(&["base-sepolia", "solana-devnet"]),
        )
        .unwrap();
        assert!(
            matches!(c, Chosen::Evm(ref e) if e.amount == Usd(1000)),
            "{c:?}"
        );
        // Solana not allowed: the EVM offer, and Solana alone is refused.
        let c = choose_any(&offers, &policy(), &svm_policy(&["base-sepolia"])).unwrap();
        assert!(matches!(c, Chosen::Evm(_)));
        let only = pr(vec![svm_offer("solana-devnet", "2000")]);
        let r = choose_any(&only, &policy(), &svm_policy(&["base-sepolia"])).unwrap_err();
        assert!(r[0].reason.contains("not in payment.networks"), "{r:?}");
    }

    #[test]
    fn solana_refusals_and_ceiling() {
        let p = svm_policy(&["solana-devnet", "solana"]);
        let one = |o| choose_any(&pr(vec![o]), &policy(), &p);
        let r = one(svm_offer("solana-devnet", "500001")).unwrap_err();
        assert!(
            r[0].over_ceiling && r[0].reason.contains("ceiling"),
            "{r:?}"
        );
        assert!(one(svm_offer("solana-devnet", "500000")).is_ok());
        let mut o = svm_offer("solana-devnet", "1");
        o["asset"] = json!("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v");
        assert!(one(o).unwrap_err()[0].reason.contains("not USDC"));
        let mut o = svm_offer("solana", "1");
        o["extra"] = json!({});
        assert!(one(o).unwrap_err()[0].reason.contains("feePayer"));
        let mut o = svm_offer("solana", "1");
        o["network"] = json!("solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z");
        assert!(one(o).unwrap_err()[0].reason.contains("unknown"));
        let mut p2 = p.clone();
        p2.pay_to = Some(vec![Pubkey([7; 32])]);
        let r = choose_any(&pr(vec![svm_offer("solana", "1")]), &policy(), &p2).unwrap_err();
        assert!(r[0].reason.contains("payment.pay_to"), "{r:?}");
    }

    #[test]
    fn v1_network_names_map() {
        let doc = json!({"x402Version":1,"accepts":[{"scheme":"exact","network":"base-sepolia",
            "maxAmountRequired":"1000","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC","maxTimeoutSeconds":60,
            "extra":{"name":"USDC","version":"2"}}]})
        .to_string();
        let c = choose(&parse_402(None, doc.as_bytes()).unwrap(), &policy()).unwrap();
        assert_eq!(c.network.chain_id, 84532);
        assert_eq!(c.amount, Usd(1000));
    }
}
