//! The core's one error type. The binding maps each variant to a Ruby class
//! under `ApprovalSync::Error`.

use std::time::Duration;

/// Everything the core can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument the caller should have checked: bad id, rev or member.
    #[error("{0}")]
    InvalidArgument(String),

    /// The configuration cannot describe a working connection.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Redis did not answer within the configured timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),

    /// Connecting, or talking over an established connection, failed.
    #[error("redis connection failed: {0}")]
    Connection(String),

    /// A key of this project holds another type than the one it must hold.
    #[error("key {key} holds the wrong type: {detail}")]
    WrongType { key: String, detail: String },

    /// Redis answered something other than what the protocol expects.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),

    /// The call was interrupted by the host (a Ruby Timeout or Thread#kill).
    #[error("interrupted")]
    Interrupted,

    /// A bug in this crate, caught before it could unwind into the host.
    #[error("internal error: {0}")]
    Panic(String),
}

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Maps a redis-rs error to ours, keeping the key named by our scripts.
    pub(crate) fn from_redis(err: redis::RedisError, timeout: Duration) -> Error {
        if let Some(code) = err.code() {
            let detail = err.detail().unwrap_or_default().to_string();
            match code {
                "ASWRONGTYPE" => return wrong_type(&detail),
                "WRONGTYPE" => {
                    return Error::WrongType {
                        key: "(unknown)".into(),
                        detail,
                    }
                }
                _ => {}
            }
        }
        // Lua errors arrive wrapped by the server: "... ASWRONGTYPE key holds ...".
        let text = err.to_string();
        if let Some(at) = text.find("ASWRONGTYPE ") {
            return wrong_type(&text[at + "ASWRONGTYPE ".len()..]);
        }
        if err.is_timeout() {
            return Error::Timeout(timeout);
        }
        if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
            return Error::Connection(text);
        }
        Error::Connection(text)
    }

    /// True when the connection that produced this error must not be reused.
    pub(crate) fn poisons_connection(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_) | Error::Connection(_) | Error::Interrupted | Error::Panic(_)
        )
    }
}

fn wrong_type(detail: &str) -> Error {
    let key = detail.split_whitespace().next().unwrap_or("(unknown)");
    Error::WrongType {
        key: key.to_string(),
        detail: detail.trim().to_string(),
    }
}
