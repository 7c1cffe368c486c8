//! x402d: a local proxy that pays x402-priced OpenAI-compatible upstreams on
//! behalf of unmodified OpenAI apps, within per-app spend caps.
#![forbid(unsafe_code)]

pub mod admin;
pub mod alerts;
pub mod anthropic;
pub mod chain;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod ledger;
pub mod metrics;
pub mod money;
pub mod openai;
pub mod pay;
pub mod server;
pub mod upstream;
pub mod wallet;
pub mod x402;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
