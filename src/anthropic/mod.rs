//! The Anthropic Messages front door (`POST /v1/messages`), so Claude Code and
//! the Anthropic SDKs work unmodified. The upstream only speaks chat
//! completions (and never streams), so a Messages request is translated to a
//! chat completion request, paid like any call, and the completion is turned
//! back into a Message or its event stream. Pure functions; the server does
//! the I/O.
//!
//! - `request`: Messages request → chat completion request.
//! - `answer`: chat completion → Message, and → Messages event stream.
//! - `models`: Anthropic model ids (`claude-haiku-4-5-20251001`) → upstream catalog ids.
//! - `error`: `ProxyError` → Anthropic's error shape (the one place that does it).

pub mod answer;
pub mod error;
pub mod models;
pub mod request;

/// `anthropic-version` the answers follow (the one every SDK sends).
pub const VERSION: &str = "2023-06-01";
