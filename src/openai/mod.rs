//! The OpenAI-facing surface: error bodies, SSE synthesis, the model list.

pub mod error;
pub mod models;
pub mod responses;
pub mod sse;
