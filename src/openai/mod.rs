//! The OpenAI-facing surface: error bodies (and later SSE synthesis, model lists).

pub mod error;
