//! The x402 protocol as pure functions: parsing 402 replies (v1 body, v2 header),
//! choosing a requirement we are willing to pay, and encoding the payment header.
//! No I/O lives here; the payment flow in `crate::pay` drives it.

pub mod extensions;
pub mod failure;
pub mod header;
pub mod networks;
pub mod parse;
pub mod select;
pub mod svm;

pub use networks::Network;
pub use parse::{PaymentRequired, Requirement, SettleResponse};
pub use select::{Choice, Policy, Refusal};

/// Header carrying v2 requirements on a 402 (base64 JSON).
pub const HDR_PAYMENT_REQUIRED: &str = "payment-required";
/// Header carrying the v2 payment on the retried request.
pub const HDR_PAYMENT_SIGNATURE: &str = "payment-signature";
/// Header carrying the v2 settlement result on the paid reply.
pub const HDR_PAYMENT_RESPONSE: &str = "payment-response";
/// v1 equivalents.
pub const HDR_X_PAYMENT: &str = "x-payment";
pub const HDR_X_PAYMENT_RESPONSE: &str = "x-payment-response";

/// Wire version of a 402 exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }
    /// Request header that carries the payment for this version.
    pub fn payment_header(self) -> &'static str {
        match self {
            Version::V1 => HDR_X_PAYMENT,
            Version::V2 => HDR_PAYMENT_SIGNATURE,
        }
    }
}
