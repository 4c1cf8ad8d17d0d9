//! One signed request to storage and its answer, read within a size and a time bound.
//!
//! rust-s3 signs each request (SigV4: its URL and headers). The request goes out here, through
//! the blocking client rust-s3 itself uses, because rust-s3 reads every answer's body whole: a
//! storage endpoint answering 500 with an endless body took a sync past 1.6 GB in 8 s. Here an
//! answer's body is read to at most `ANSWER_LIMIT` and the rest is dropped with the connection;
//! only an object's own body, on success, is streamed to the caller. Each request is sent once:
//! a failure is the run's to handle (the storage's backoff), never a pause inside the run.

use std::io::Read;
use std::time::Duration;

use attohttpc::header::{HeaderMap, HeaderName};
use s3::Bucket;
use s3::command::{Command, HttpMethod};
use s3::request::Request;
use s3::request::blocking::AttoRequest;

use super::StorageError;

/// The most of any answer's body read, other than an object's: S3's XML answers (an upload id,
/// a completed upload, an error) are well under a KiB.
pub const ANSWER_LIMIT: u64 = 64 * 1024;
/// How long connecting may take, within the request's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A successful answer whose body was read (to at most `ANSWER_LIMIT`).
pub struct Answer {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a write requires of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition<'a> {
    Unconditional,
    /// `If-None-Match: *`: the key holds no object yet (else storage answers 412).
    Absent,
    /// `If-Match`: the key holds the object with this ETag (else storage answers 412).
    Matches(&'a str),
}

/// Sends `command` for `key` and reads its answer; a status outside 2xx is
/// `StorageError::Refused` with the start of what storage said.
pub fn exchange(
    bucket: &Bucket,
    key: &str,
    command: Command<'_>,
    timeout: Duration,
) -> Result<Answer, StorageError> {
    exchange_if(bucket, key, command, Condition::Unconditional, timeout)
}

/// [`exchange`] with a condition on the key.
pub fn exchange_if(
    bucket: &Bucket,
    key: &str,
    command: Command<'_>,
    condition: Condition<'_>,
    timeout: Duration,
) -> Result<Answer, StorageError> {
    let head = command.http_verb() == HttpMethod::Head;
    let response = send(bucket, key, command, condition, timeout)?;
    let (_, headers, reader) = response.split();
    let mut body = Vec::new();
    if head {
        // A HEAD answer's Content-Length is the object's, with no body to read.
        return Ok(Answer { headers, body });
    }
    reader
        .take(ANSWER_LIMIT + 1)
        .read_to_end(&mut body)
        .map_err(|error| StorageError::Unanswered(format!("reading the answer: {error}")))?;
    if body.len() as u64 > ANSWER_LIMIT {
        return Err(StorageError::Unexpected(format!(
            "an answer longer than {ANSWER_LIMIT} bytes"
        )));
    }
    Ok(Answer { headers, body })
}

/// Sends a `GetObject` for `key` and streams the object's body into `out`, at most `limit`
/// bytes of it.
pub fn download(
    bucket: &Bucket,
    key: &str,
    timeout: Duration,
    limit: u64,
    out: &mut impl std::io::Write,
) -> Result<u64, StorageError> {
    let response = send(
        bucket,
        key,
        Command::GetObject,
        Condition::Unconditional,
        timeout,
    )?;
    let (_, _, reader) = response.split();
    std::io::copy(&mut reader.take(limit), out)
        .map_err(|error| StorageError::Unanswered(format!("reading {key}: {error}")))
}

fn send(
    bucket: &Bucket,
    key: &str,
    command: Command<'_>,
    condition: Condition<'_>,
    timeout: Duration,
) -> Result<attohttpc::Response, StorageError> {
    let request = AttoRequest::new(bucket, key, command)?;
    let url = request.url()?;
    let mut session = attohttpc::Session::new();
    for (name, value) in request.headers()?.iter() {
        let name = HeaderName::from_bytes(name.as_ref()).map_err(s3::error::S3Error::from)?;
        session.header(name, value.to_str().map_err(s3::error::S3Error::from)?);
    }
    // Unsigned, as SigV4 allows for a header outside `x-amz-*`.
    match condition {
        Condition::Unconditional => {}
        Condition::Absent => session.header(attohttpc::header::IF_NONE_MATCH, "*"),
        Condition::Matches(etag) => {
            session.header(attohttpc::header::IF_MATCH, format!("\"{etag}\""))
        }
    }
    session.connect_timeout(CONNECT_TIMEOUT.min(timeout));
    session.read_timeout(timeout);
    session.timeout(timeout);
    // A redirect (another region, a proxy) is an answer to report, not a place to resend to.
    session.follow_redirects(false);
    let builder = match request.command().http_verb() {
        HttpMethod::Get => session.get(url.as_str()),
        HttpMethod::Delete => session.delete(url.as_str()),
        HttpMethod::Put => session.put(url.as_str()),
        HttpMethod::Post => session.post(url.as_str()),
        HttpMethod::Head => session.head(url.as_str()),
    };
    let method = request.command().http_verb();
    let response = builder
        .bytes(request.request_body()?)
        .send()
        .map_err(|error| StorageError::Unanswered(format!("{method:?} {key}: {error}")))?;
    if response.is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let (_, _, reader) = response.split();
    let mut said = Vec::new();
    // What storage said is only for the log and the error's kind; a read error leaves it short.
    // A HEAD answer has no body to read.
    if method != HttpMethod::Head {
        let _ = reader.take(ANSWER_LIMIT).read_to_end(&mut said);
    }
    Err(StorageError::Refused {
        status,
        answer: String::from_utf8_lossy(&said).into_owned(),
    })
}
