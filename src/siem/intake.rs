//! One HTTP request to the configured intake, and the retry policy around it.
//!
//! The client is attohttpc, the blocking client rust-s3 already brings in: no async runtime.

use std::io::Read;
use std::time::{Duration, Instant, SystemTime};

use crate::config::siem::{Backend, SiemSettings};
use crate::shutdown::Shutdown;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an intake's answer that is read (Elastic's item list for 500 rows is well under).
const ANSWER_LIMIT: u64 = 16 * 1024 * 1024;

/// The intake's answer to one request, or why none came.
#[derive(Debug)]
pub enum Reply {
    Answer(Answer),
    NoAnswer(String),
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After`, in seconds or as an HTTP date.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer's text for a log line or an error, shortened.
    pub fn summary(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        format!(
            "HTTP {} {}",
            self.status,
            crate::logging::peer_text(&text, 300)
        )
    }
}

/// Statuses worth asking again: timeouts, throttling and server errors.
pub fn is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// How a request body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

pub struct Intake<'a> {
    pub settings: &'a SiemSettings,
    /// This site (else the host name), as events report it: `host`, `hostname`, `host.name`.
    pub host: String,
    /// Splunk's `X-Splunk-Request-Channel` when indexer acknowledgement is on: one per run.
    pub channel: Option<String>,
    session: attohttpc::Session,
}

impl<'a> Intake<'a> {
    pub fn new(settings: &'a SiemSettings) -> Intake<'a> {
        let mut session = attohttpc::Session::new();
        session.connect_timeout(CONNECT_TIMEOUT.min(settings.request_timeout));
        session.read_timeout(settings.request_timeout);
        session.timeout(settings.request_timeout);
        // A redirect is a misconfigured endpoint; following it would resend audit rows elsewhere.
        session.follow_redirects(false);
        Intake {
            settings,
            // The site, as the fleet's SIEM tells hosts apart (SPEC section 9).
            host: crate::site::current().map_or_else(crate::holder::host_name, str::to_string),
            channel: settings.splunk_ack.then(new_channel),
            session,
        }
    }

    /// Sends one request to the backend's intake path; never retries.
    pub fn post(&self, content_type: &str, encoding: Encoding, body: Vec<u8>) -> Reply {
        self.post_to(&self.settings.url(), content_type, encoding, body)
    }

    /// Sends one request to `url` (the intake's, or another of its endpoints); never retries.
    pub fn post_to(
        &self,
        url: &str,
        content_type: &str,
        encoding: Encoding,
        body: Vec<u8>,
    ) -> Reply {
        let key = self.settings.api_key.expose();
        let mut request = self
            .session
            .post(url)
            .header("Content-Type", content_type)
            .header(
                "User-Agent",
                concat!("edgecron/", env!("CARGO_PKG_VERSION")),
            );
        request = match self.settings.backend {
            Backend::Splunk => request.header("Authorization", format!("Splunk {key}")),
            Backend::Datadog => request.header("DD-API-KEY", key),
            Backend::Elastic => request.header("Authorization", format!("ApiKey {key}")),
        };
        if encoding == Encoding::Gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        if let Some(channel) = &self.channel {
            request = request.header("X-Splunk-Request-Channel", channel);
        }
        let (size, started) = (body.len(), std::time::Instant::now());
        let response = match request.bytes(body).send() {
            Ok(response) => response,
            Err(error) => return Reply::NoAnswer(format!("POST {url}: {error}")),
        };
        log::debug!(
            "siem-ship: POST {url} ({size} bytes): HTTP {} in {} ms",
            response.status().as_u16(),
            started.elapsed().as_millis()
        );
        let (status, headers, reader) = response.split();
        let retry_after = headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let mut body = Vec::new();
        if let Err(error) = reader.take(ANSWER_LIMIT).read_to_end(&mut body) {
            return Reply::NoAnswer(format!("reading the answer: {error}"));
        }
        Reply::Answer(Answer {
            status: status.as_u16(),
            retry_after,
            body,
        })
    }
}

/// A channel id in the GUID form HEC expects, random for each run.
fn new_channel() -> String {
    let mut random = fastrand::Rng::new();
    let hex = |count: usize, random: &mut fastrand::Rng| -> String {
        (0..count)
            .map(|_| char::from_digit(random.u32(0..16), 16).unwrap_or('0'))
            .collect()
    };
    format!(
        "{}-{}-4{}-{}{}-{}",
        hex(8, &mut random),
        hex(4, &mut random),
        hex(3, &mut random),
        ['8', '9', 'a', 'b'][random.usize(0..4)],
        hex(3, &mut random),
        hex(12, &mut random)
    )
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Exponential backoff with jitter, bounded by attempts, the job's deadline and shutdown.
pub struct Retry<'a> {
    deadline: Instant,
    shutdown: &'a Shutdown,
    failures: u32,
    random: fastrand::Rng,
}

/// Consecutive failed attempts before a batch is given up until the next run.
const MAX_FAILURES: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl<'a> Retry<'a> {
    pub fn new(deadline: Instant, shutdown: &'a Shutdown) -> Retry<'a> {
        Retry {
            deadline,
            shutdown,
            failures: 0,
            random: fastrand::Rng::new(),
        }
    }

    /// Why no further request should start: the deadline passed or shutdown was requested.
    pub fn stopping(&self) -> Option<String> {
        if self.shutdown.is_requested() {
            return Some("shutting down".into());
        }
        (Instant::now() >= self.deadline).then(|| "the job's deadline passed".into())
    }

    /// Waits `wait` unless that would pass the deadline or shutdown interrupts it; answers
    /// whether it waited.
    pub fn pause(&self, wait: Duration) -> bool {
        if wait >= self.deadline.saturating_duration_since(Instant::now()) {
            return false;
        }
        !self.shutdown.wait(wait)
    }

    /// The intake took something: the next failure starts the backoff afresh.
    pub fn progressed(&mut self) {
        self.failures = 0;
    }

    /// After a failed attempt (`why`): waits before the next one and answers true, or answers
    /// false when attempts, the deadline or shutdown say to give up.
    pub fn again(&mut self, why: &str, retry_after: Option<Duration>) -> bool {
        self.failures += 1;
        log::debug!("siem-ship: attempt {} failed: {why}", self.failures);
        if self.failures >= MAX_FAILURES {
            log::warn!(
                "siem-ship: giving up after {} attempts: {why}",
                self.failures
            );
            return false;
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(MAX_BACKOFF);
        // Half fixed, half random: attempts from many hosts spread out, none retries at once.
        let jitter = self.random.u64(0..=backoff.as_millis() as u64 / 2);
        let wait = retry_after.unwrap_or(backoff / 2 + Duration::from_millis(jitter));
        if wait >= self.deadline.saturating_duration_since(Instant::now()) {
            log::warn!(
                "siem-ship: giving up: waiting {:.1}s more would pass the job's deadline ({why})",
                wait.as_secs_f64()
            );
            return false;
        }
        if self.shutdown.wait(wait) {
            log::warn!("siem-ship: giving up: shutting down ({why})");
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retries_stop_at_the_deadline_and_at_the_attempt_limit() {
        let shutdown = Shutdown::default();
        let mut near = Retry::new(Instant::now() + Duration::from_millis(100), &shutdown);
        assert!(!near.again("busy", Some(Duration::from_secs(1))));

        let mut far = Retry::new(Instant::now() + Duration::from_secs(600), &shutdown);
        let attempts = (0..MAX_FAILURES)
            .take_while(|_| far.again("busy", Some(Duration::ZERO)))
            .count();
        assert_eq!(attempts as u32, MAX_FAILURES - 1);

        shutdown.request();
        let mut stopping = Retry::new(Instant::now() + Duration::from_secs(600), &shutdown);
        assert!(!stopping.again("busy", Some(Duration::from_millis(1))));
    }

    #[test]
    fn throttling_timeouts_and_server_errors_are_retried() {
        for status in [408, 429, 500, 502, 503] {
            assert!(is_retryable(status), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413] {
            assert!(!is_retryable(status), "{status}");
        }
    }
}
