//! The OpenAI Responses API (`POST /v1/responses`) on top of an upstream that
//! only speaks chat completions. Codex CLI and the Agents SDK speak Responses;
//! x402d translates each request into one chat completion (paid like any call),
//! then turns the completion back into a `response` object or the Responses
//! event stream. Pure functions over JSON; the server does the I/O.
//!
//! - [`request`]: Responses request → chat completion request (+ what the answer echoes).
//! - [`answer`]: chat completion → `response` object.
//! - [`stream`]: `response` object → the `response.*` SSE event sequence.
//!
//! x402d keeps no conversation state: `previous_response_id`, `conversation`,
//! `store: true` and `item_reference` inputs are refused before anything is paid.

pub mod answer;
pub mod request;
pub mod stream;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What the answer needs from the request: the fields a `response` object
/// echoes back, and how chat tool names map back to Responses tool kinds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Echo {
    /// `model`, `instructions`, `tools`, `tool_choice`, … as the app sent them
    /// (defaults filled in), copied into every `response` object.
    pub fields: Map<String, Value>,
    /// Chat function name → the Responses tool it stands for.
    pub tools: BTreeMap<String, ToolKind>,
}

/// How a chat function call maps back to a Responses output item.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolKind {
    /// A freeform (`custom`) tool exposed as a function with one string
    /// parameter `input`: answered as `custom_tool_call` with the raw input.
    Custom { name: String },
    /// A function inside a `namespace` tool, exposed flat as `<ns>__<name>`.
    Namespaced { namespace: String, name: String },
}

/// The one string parameter a custom tool's function takes.
pub const CUSTOM_INPUT: &str = "input";

/// A stable 64-bit FNV-1a hash: ids derived from the upstream answer are the
/// same for every coalesced caller that shares it.
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
