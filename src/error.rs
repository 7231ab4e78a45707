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
    #[error("wrong type: {detail}")]
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
        // Our scripts raise "ASWRONGTYPE <key> holds ...": as the error code
        // itself (`error({err = ...})` on Redis 7) or inside the server's
        // wrapping of a script error ("ERR Error running script ...: @user_script:29:
        // ASWRONGTYPE ..." for `error('...')`, which Redis 6.2 needs).
        let text = err.to_string();
        if let Some(at) = text.find("ASWRONGTYPE ") {
            return wrong_type(&clean(&text[at + "ASWRONGTYPE ".len()..]));
        }
        // A damaged entry, the same way: only our own words reach the caller.
        if let Some(at) = text.find("ASCORRUPT ") {
            return Error::Protocol(format!(
                "ASCORRUPT {}",
                clean(&text[at + "ASCORRUPT ".len()..])
            ));
        }
        if let Some(code) = err.code() {
            let detail = clean(err.detail().unwrap_or_default());
            return match code {
                "ASWRONGTYPE" => wrong_type(&detail),
                "WRONGTYPE" => Error::WrongType {
                    key: "(unknown)".into(),
                    detail: format!("(unknown) {detail}"),
                },
                // The server cannot serve us now, but another one, or this one
                // after a reconnect, can: a demoted master, a node that is
                // loading, a cluster or auth that changed under us.
                "READONLY" | "LOADING" | "MASTERDOWN" | "CLUSTERDOWN" | "TRYAGAIN" | "NOAUTH"
                | "WRONGPASS" | "NOPERM" => Error::Connection(format!("{code} {detail}")),
                _ => Error::Protocol(format!("{code} {detail}")),
            };
        }
        if err.is_timeout() {
            return Error::Timeout(timeout);
        }
        Error::Connection(crate::config::redact_url(&text))
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

/// Drops what Redis 7 appends to errors raised inside a script
/// (" script: <sha>, on @user_script:29."), which says nothing to a caller.
fn clean(detail: &str) -> String {
    let end = detail.find(" script: ").unwrap_or(detail.len());
    detail[..end]
        .trim()
        .trim_end_matches('.')
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_noise_is_stripped_from_wrong_type_errors() {
        let detail = "approval_sync:{mr_42_cannot_merge}:markers holds a string, expected a \
                      zset script: 0123abcd, on @user_script:29.";
        let err = wrong_type(&clean(detail));
        assert_eq!(
            err.to_string(),
            "wrong type: approval_sync:{mr_42_cannot_merge}:markers holds a string, expected a zset"
        );
        let Error::WrongType { key, .. } = err else {
            panic!("not a wrong type error")
        };
        assert_eq!(key, "approval_sync:{mr_42_cannot_merge}:markers");
    }

    #[test]
    fn script_noise_is_stripped_from_corrupt_entry_errors() {
        // Redis 6.2 wraps an error('...') raised in a script.
        let text = "Error running script (call to f_0123abcd): @user_script:65: ASCORRUPT \
                    approval_sync:{mr_42_cannot_merge}:resets field 77 is not an entry";
        let err = Error::from_redis(
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "An error was signalled by the server",
                text.to_string(),
            )),
            Duration::from_secs(1),
        );
        assert_eq!(
            err.to_string(),
            Error::Protocol(
                "ASCORRUPT approval_sync:{mr_42_cannot_merge}:resets field 77 is not an entry"
                    .into()
            )
            .to_string()
        );
    }

    #[test]
    fn a_timeout_keeps_its_duration() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        let err = Error::from_redis(redis::RedisError::from(io), Duration::from_millis(250));
        assert!(matches!(err, Error::Timeout(d) if d == Duration::from_millis(250)));
        assert!(err.poisons_connection());
    }
}
