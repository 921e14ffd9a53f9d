//! The simulator's error type.

use shared_model::ocpp::framing::ErrorCode;

/// Why a simulator operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The server answered the WebSocket upgrade with an HTTP error (401 for a wrong
    /// password, 404 for an unknown charge point, ...).
    #[error("the server refused the WebSocket upgrade with HTTP {status}: {body}")]
    Refused {
        /// HTTP status code.
        status: u16,
        /// Response body, if any (lossy UTF-8).
        body: String,
    },
    /// The upgrade succeeded but the server did not select the offered subprotocol.
    #[error("the server did not accept the subprotocol: {0}")]
    SubprotocolRefused(String),
    /// TCP connect, DNS, handshake or URL problem.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The operation needs a connection and there is none.
    #[error("not connected")]
    NotConnected,
    /// The connection was lost while waiting for the answer.
    #[error("the connection was lost before the answer came")]
    Disconnected,
    /// No answer within the call timeout.
    #[error("no answer to {action} within the timeout")]
    Timeout {
        /// Action of the CALL (or `"raw"` for [`send_raw`](super::ChargePoint::send_raw)).
        action: String,
    },
    /// The server answered with a CALLERROR.
    #[error("CALLERROR {code}: {description}")]
    CallError {
        /// The error code.
        code: ErrorCode,
        /// The error description.
        description: String,
    },
    /// The server's CALLRESULT payload does not decode as the expected response type.
    #[error("unexpected answer payload: {0}")]
    BadResponse(String),
    /// The server sent a text that is not a valid OCPP-J frame (only reported to
    /// [`send_raw`](super::ChargePoint::send_raw)).
    #[error("the server sent an invalid frame ({reason}): {text}")]
    BadFrame {
        /// The text as received.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The central system refused the id tag of a StartTransaction (the simulator then
    /// stops the transaction with reason DeAuthorized, as `StopTransactionOnInvalidId`
    /// says).
    #[error("id tag not accepted: {status}")]
    IdTagRejected {
        /// The idTagInfo status, e.g. `"Invalid"`.
        status: String,
        /// The transaction id the central system gave.
        transaction_id: Option<i32>,
    },
    /// A bad argument: unknown connector, over-long id tag, ...
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The operation does not fit the charger's state (no transaction to stop, ...).
    #[error("not possible now: {0}")]
    InvalidState(String),
    /// The simulator task has ended.
    #[error("the simulator has stopped")]
    Stopped,
}
