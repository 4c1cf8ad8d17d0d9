//! Alert webhooks: one JSON POST, retried a few times on connection errors and 5xx.

use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Posts `body` to `url`; answers the HTTP status of the accepted attempt, or why none was.
pub fn post_json(url: &str, body: &Value) -> Result<u16, String> {
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(FIRST_RETRY * 2u32.pow(attempt - 1));
        }
        let sent = attohttpc::post(url)
            .header("Content-Type", "application/json")
            .header(
                "User-Agent",
                concat!("edgecron/", env!("CARGO_PKG_VERSION")),
            )
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .follow_redirects(false)
            .bytes(body.to_string())
            .send();
        match sent {
            Ok(response) if response.is_success() => return Ok(response.status().as_u16()),
            Ok(response) if response.status().is_server_error() => {
                last_error = format!("HTTP {}", response.status().as_u16());
            }
            Ok(response) => return Err(format!("HTTP {}", response.status().as_u16())),
            Err(error) => last_error = error.to_string(),
        }
        log::debug!("webhook: attempt {} failed: {last_error}", attempt + 1);
    }
    Err(last_error)
}
