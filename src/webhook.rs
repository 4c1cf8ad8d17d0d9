//! Alert webhooks: one JSON POST, a single attempt within a short timeout. A failure waits for
//! a later delivery (the alert outbox, `cron-tick`'s pending events): a receiver that is down,
//! or accepts and never answers, never holds a job for more than that timeout.

use std::time::Duration;

/// Why a POST was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The receiver answered and refused this body (4xx other than 408 and 429): sending it
    /// again will not help.
    #[error("HTTP {0}")]
    Refused(u16),
    /// Unreachable, timed out, throttled or failing (5xx): a later attempt may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// One POST of `body` (JSON text) to `url` within `timeout`; answers the HTTP status taken.
pub fn post_once(url: &str, body: &str, timeout: Duration) -> Result<u16, PostError> {
    let sent = attohttpc::post(url)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("edgecron/", env!("CARGO_PKG_VERSION")),
        )
        .connect_timeout(timeout)
        .timeout(timeout)
        .follow_redirects(false)
        .bytes(body.as_bytes().to_vec())
        .send();
    match sent {
        Ok(response) if response.is_success() => Ok(response.status().as_u16()),
        Ok(response) => {
            let status = response.status().as_u16();
            if response.status().is_client_error() && status != 408 && status != 429 {
                Err(PostError::Refused(status))
            } else {
                Err(PostError::Unavailable(format!("HTTP {status}")))
            }
        }
        Err(error) => Err(PostError::Unavailable(error.to_string())),
    }
}
