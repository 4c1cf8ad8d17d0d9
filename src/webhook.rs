//! Alert webhooks: one JSON POST. [`post_once`] is a single attempt with a short timeout, for
//! the alert outbox (a failure waits for a later delivery); [`post_json`] retries a few times
//! on connection errors and 5xx, for callers that keep no outbox of their own.

use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(500);

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

/// Posts `body` to `url`; answers the HTTP status of the accepted attempt, or why none was.
pub fn post_json(url: &str, body: &Value) -> Result<u16, PostError> {
    let text = body.to_string();
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(FIRST_RETRY * 2u32.pow(attempt - 1));
        }
        match post_once(url, &text, TIMEOUT) {
            Ok(status) => return Ok(status),
            Err(error @ PostError::Refused(_)) => return Err(error),
            Err(PostError::Unavailable(error)) => last_error = error,
        }
        log::debug!("webhook: attempt {} failed: {last_error}", attempt + 1);
    }
    Err(PostError::Unavailable(last_error))
}
