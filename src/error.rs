//! The one error type an app can see. Each variant knows its HTTP status, its
//! OpenAI `type`/`code`, and whether a client retry is safe. The crucial bit on
//! every error is whether a signature left the process: once it has, the answer
//! carries `x-should-retry: false` so SDK retries can never pay twice.
//! `openai::error::response` is the only place that turns it into bytes.

use hyper::StatusCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "Unknown route {method} {path}. x402d serves POST /v1/chat/completions, /v1/responses and /v1/messages (Anthropic) (also under /v1/pro/ and /v1/premium/) and GET /v1/models."
    )]
    NotFound { method: String, path: String },

    #[error("Request body is larger than the {limit}-byte limit.")]
    BodyTooLarge { limit: usize },

    #[error("Request body is not valid JSON: {0}")]
    InvalidJson(String),

    #[error("Could not read the request body: {0}")]
    BadRequestBody(String),

    /// A well-formed request x402d cannot serve as asked (e.g. a Responses
    /// `previous_response_id`: x402d keeps no conversation state).
    #[error("{message}")]
    InvalidRequest {
        param: &'static str,
        code: &'static str,
        message: String,
    },

    #[error(
        "Model {model:?} is not in the upstream's model list and no `[models]` alias maps it.{close} Set ANTHROPIC_MODEL to a listed id, or add an alias under [models] in the x402d config."
    )]
    UnknownModel { model: String, close: String },

    #[error(
        "Unknown API key. This x402d only accepts the api_key of a configured app ([apps.NAME] in its config)."
    )]
    UnknownApp,

    #[error("Model {model:?} is not allowed for app {app:?} (its `models` allow-list: {allowed}).")]
    ModelNotAllowed {
        app: String,
        model: String,
        allowed: String,
    },

    #[error(
        "Host {0:?} is not allowed: x402d only answers requests addressed to localhost, 127.0.0.1 or [::1] (add names to `allowed_hosts`)."
    )]
    HostNotAllowed(String),

    #[error(
        "Origin {0:?} is not allowed: browsers may only call x402d from origins listed in `allowed_origins`."
    )]
    OriginNotAllowed(String),

    #[error(
        "This browser request ({0}) may not make x402d pay: only fetch()/XHR calls from origins listed in `allowed_origins` may. No payment was made."
    )]
    BrowserRequestNotAllowed(String),

    #[error("No wallet is configured: {0}")]
    WalletNotConfigured(String),

    #[error("The wallet could not be loaded: {0}")]
    Wallet(String),

    #[error(
        "The upstream answered 402 but its payment requirements are unusable: {0}. No payment was made."
    )]
    BadRequirements(String),

    #[error(
        "x402d refused to pay: no offered payment option is acceptable. Offered: {0}. No payment was made."
    )]
    NoAcceptableOption(String),

    #[error(
        "x402d refused to pay: the price is above the per-call ceiling. Offered: {0}. No payment was made."
    )]
    PriceAboveCeiling(String),

    #[error(
        "x402d refused to pay: {}, more than the {limit} s a payment can tolerate (its validity is computed from this clock). Fix the system clock (enable NTP, e.g. `timedatectl set-ntp true`). No payment was made.", crate::clock::describe(*skew)
    )]
    ClockSkew { skew: i64, limit: i64 },

    #[error("Budget exceeded: {message} No payment was made.")]
    BudgetExceeded { code: &'static str, message: String },

    #[error(
        "The seller rejected the payment: {reason}. The authorization was not settled; it expires unused at {valid_before} (unix time)."
    )]
    PaymentRejected { reason: String, valid_before: u64 },

    #[error("Upstream {upstream} is unreachable: {reason}. No payment was made.")]
    UpstreamUnreachable { upstream: String, reason: String },

    #[error(
        "x402d cannot reach the {network} RPC to build the payment ({reason}); check [payment.rpc] (`x402d doctor`). No payment was made."
    )]
    ChainUnreachable { network: String, reason: String },

    #[error("Upstream did not answer within {secs} s. No payment was made.")]
    UpstreamTimeout { secs: u64 },

    #[error(
        "The paid request failed after the payment was sent ({reason}); the payment of ${amount} is recorded as at-risk until the chain shows whether it settled. Do not retry: a retry would pay again."
    )]
    PaymentOutcomeUnknown { reason: String, amount: String },

    #[error(
        "The seller was paid ${amount} for this call ({proof}) but lost the answer ({reason}). x402d paid once and will not pay again for this call; sending the request again is a new call and pays again."
    )]
    PaidAnswerLost {
        reason: String,
        amount: String,
        /// Where the chain shows the payment, in words for its network.
        proof: String,
    },

    #[error(
        "The seller says settling the payment failed ({reason}). The transaction may still be on chain: the payment of ${amount} is recorded as at-risk until the chain shows whether it settled. Do not retry: a retry would pay again."
    )]
    SettlementFailed { reason: String, amount: String },

    #[error("Reading the upstream reply failed ({reason}).{}", if *paid { " The payment was already made; do not retry: a retry would pay again." } else { " No payment was made." })]
    UpstreamBody { paid: bool, reason: String },

    #[error("The ledger failed: {0}. No payment was made.")]
    Ledger(String),

    /// The shared ledger database (team mode) cannot be reached: raised only
    /// before any signature leaves the process, so a retry cannot pay twice.
    #[error(
        "The ledger database is unreachable ({0}). Nothing was signed and no payment was made; paid calls resume once it is back."
    )]
    LedgerUnavailable(String),

    #[error("Internal error: {0}")]
    Internal(String),
}

impl From<crate::ledger::LedgerError> for ProxyError {
    fn from(e: crate::ledger::LedgerError) -> ProxyError {
        match e {
            crate::ledger::LedgerError::Unavailable(m) => ProxyError::LedgerUnavailable(m),
            e => ProxyError::Ledger(e.to_string()),
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            NotFound { .. } => StatusCode::NOT_FOUND,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            InvalidJson(_) | BadRequestBody(_) | InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            UnknownModel { .. } => StatusCode::NOT_FOUND,
            UnknownApp => StatusCode::UNAUTHORIZED,
            ModelNotAllowed { .. } | OriginNotAllowed(_) | BrowserRequestNotAllowed(_) => {
                StatusCode::FORBIDDEN
            }
            HostNotAllowed(_) => StatusCode::MISDIRECTED_REQUEST,
            WalletNotConfigured(_) | Wallet(_) | ClockSkew { .. } | LedgerUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // 402 is never retried by the OpenAI SDKs, which is what we want for
            // every refusal to pay.
            NoAcceptableOption(_)
            | PriceAboveCeiling(_)
            | BudgetExceeded { .. }
            | PaymentRejected { .. } => StatusCode::PAYMENT_REQUIRED,
            BadRequirements(_)
            | UpstreamUnreachable { .. }
            | PaymentOutcomeUnknown { .. }
            | PaidAnswerLost { .. }
            | SettlementFailed { .. }
            | UpstreamBody { .. } => StatusCode::BAD_GATEWAY,
            UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ChainUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Ledger(_) | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI error `type`.
    pub fn kind(&self) -> &'static str {
        use ProxyError::*;
        match self {
            NotFound { .. }
            | BodyTooLarge { .. }
            | InvalidJson(_)
            | BadRequestBody(_)
            | InvalidRequest { .. }
            | UnknownModel { .. } => "invalid_request_error",
            UnknownApp => "authentication_error",
            ModelNotAllowed { .. }
            | HostNotAllowed(_)
            | OriginNotAllowed(_)
            | BrowserRequestNotAllowed(_) => "permission_error",
            BudgetExceeded { .. } => "budget_exceeded",
            WalletNotConfigured(_)
            | Wallet(_)
            | ClockSkew { .. }
            | BadRequirements(_)
            | NoAcceptableOption(_)
            | PriceAboveCeiling(_)
            | PaymentRejected { .. }
            | PaymentOutcomeUnknown { .. }
            | PaidAnswerLost { .. }
            | SettlementFailed { .. } => "payment_error",
            UpstreamUnreachable { .. }
            | UpstreamTimeout { .. }
            | UpstreamBody { .. }
            | ChainUnreachable { .. } => "upstream_error",
            Ledger(_) | LedgerUnavailable(_) | Internal(_) => "server_error",
        }
    }

    /// OpenAI error `code`, also sent as `x-x402d-error`.
    pub fn code(&self) -> &'static str {
        use ProxyError::*;
        match self {
            NotFound { .. } => "not_found",
            BodyTooLarge { .. } => "request_too_large",
            InvalidJson(_) => "invalid_json",
            BadRequestBody(_) => "bad_request_body",
            InvalidRequest { code, .. } => code,
            UnknownModel { .. } => "model_not_found",
            UnknownApp => "invalid_api_key",
            ModelNotAllowed { .. } => "model_not_allowed",
            HostNotAllowed(_) => "host_not_allowed",
            OriginNotAllowed(_) => "origin_not_allowed",
            BrowserRequestNotAllowed(_) => "browser_request_not_allowed",
            WalletNotConfigured(_) => "wallet_not_configured",
            Wallet(_) => "wallet_unavailable",
            ClockSkew { .. } => "clock_skew",
            BadRequirements(_) => "invalid_payment_requirements",
            NoAcceptableOption(_) => "no_acceptable_payment_option",
            PriceAboveCeiling(_) => "price_above_ceiling",
            BudgetExceeded { code, .. } => code,
            PaymentRejected { .. } => "payment_rejected",
            UpstreamUnreachable { .. } => "upstream_unreachable",
            UpstreamTimeout { .. } => "upstream_timeout",
            ChainUnreachable { .. } => "chain_unreachable",
            PaymentOutcomeUnknown { .. } => "payment_outcome_unknown",
            PaidAnswerLost { .. } => "paid_answer_lost",
            SettlementFailed { .. } => "payment_settlement_failed",
            UpstreamBody { .. } => "upstream_body_failed",
            Ledger(_) => "ledger_error",
            LedgerUnavailable(_) => "ledger_unavailable",
            Internal(_) => "internal_error",
        }
    }

    /// Whether a client retry is safe *and* could help. Once a signature has
    /// left the process this is always false.
    pub fn should_retry(&self) -> bool {
        matches!(
            self,
            ProxyError::UpstreamUnreachable { .. }
                | ProxyError::UpstreamTimeout { .. }
                | ProxyError::LedgerUnavailable(_)
                | ProxyError::UpstreamBody { paid: false, .. }
                | ProxyError::ChainUnreachable { .. }
        )
    }

    /// Whether a signed authorization left the process before this error.
    pub fn signature_sent(&self) -> bool {
        matches!(
            self,
            ProxyError::PaymentRejected { .. }
                | ProxyError::PaymentOutcomeUnknown { .. }
                | ProxyError::PaidAnswerLost { .. }
                | ProxyError::SettlementFailed { .. }
                | ProxyError::UpstreamBody { paid: true, .. }
        )
    }

    /// The `param` field, where one applies.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            ProxyError::ModelNotAllowed { .. } | ProxyError::UnknownModel { .. } => Some("model"),
            ProxyError::InvalidRequest { param, .. } => Some(param),
            _ => None,
        }
    }
}
