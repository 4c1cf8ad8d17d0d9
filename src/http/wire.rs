//! One request read off a connection and one response written to it: httparse parses the head,
//! and everything around it is strict framing and the contract's limits (a head of at most
//! 64 KiB within 10 s, a body of at most 1 MiB within 30 s, one `Content-Length` or `chunked`
//! and nothing else), so no client can make a worker wait, buffer without bound, or read a
//! request differently from a proxy in front of it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const MAX_HEAD_BYTES: usize = 64 * 1024;
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// From accept to the end of the head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// From the end of the head to the end of the body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long writing a response may take: a client that never reads holds a worker no longer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// More header lines than this are refused as a head too large (431).
const MAX_HEADERS: usize = 100;
/// A chunk-size line (with its extensions) longer than this is malformed.
const MAX_CHUNK_LINE: usize = 1024;
/// One read from the socket: small, so a trickling client costs little per byte.
const READ_CHUNK: usize = 8 * 1024;

/// A request whose head and body have been read in full.
pub struct Request {
    pub method: String,
    /// The request target before `?`, as sent (not percent-decoded).
    pub path: String,
    /// After `?`, empty without one.
    pub query: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Method and path only: headers carry secrets, and no log line may show them.
impl std::fmt::Debug for Request {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// Every value of the header `name` (compared case-insensitively), in the order sent.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The first value of the header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    #[cfg(test)]
    pub fn for_test(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }
}

/// Why a request is answered before any handler sees it; the connection is closed after.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Malformed(String),
    #[error("request head not received within {}s", HEAD_TIMEOUT.as_secs())]
    HeadTimeout,
    #[error("request body not received within {}s", BODY_TIMEOUT.as_secs())]
    BodyTimeout,
    #[error("body over {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} header lines")]
    HeadTooLarge,
    #[error("transfer coding {0:?} is not implemented")]
    UnknownCoding(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) => 400,
            Refusal::HeadTimeout | Refusal::BodyTimeout => 408,
            Refusal::BodyTooLarge => 413,
            Refusal::HeadTooLarge => 431,
            Refusal::UnknownCoding(_) => 501,
        }
    }
}

/// What ends reading a request.
#[derive(Debug)]
pub enum ReadError {
    /// Answered with the refusal's status, then closed.
    Refused(Refusal),
    /// The client left or the socket failed: there is no one to answer.
    Gone(io::Error),
}

impl From<Refusal> for ReadError {
    fn from(refusal: Refusal) -> ReadError {
        ReadError::Refused(refusal)
    }
}

fn malformed(message: impl Into<String>) -> ReadError {
    ReadError::Refused(Refusal::Malformed(message.into()))
}

/// How the body of a request is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    /// The announced length, within the limit.
    Length(usize),
    Chunked,
}

/// Reads one request: the head by `head_deadline`, then its body within [`BODY_TIMEOUT`].
pub fn read_request(stream: &mut TcpStream, head_deadline: Instant) -> Result<Request, ReadError> {
    let mut buffer = Vec::new();
    let head_end = read_head(stream, &mut buffer, head_deadline)?;
    let mut request = parse_head(&buffer[..head_end])?;
    let framing = framing(&request)?;
    buffer.drain(..head_end);
    let body_deadline = Instant::now() + BODY_TIMEOUT;
    // Only a client that waits for it (nothing of the body has come) needs the interim answer.
    if framing != Framing::Empty
        && buffer.is_empty()
        && request
            .header("expect")
            .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"))
    {
        // A body announced over the limit was refused by `framing`, so this is never followed
        // by a 413 for a body the client was just told to send.
        write_by(stream, b"HTTP/1.1 100 Continue\r\n\r\n", body_deadline)
            .map_err(ReadError::Gone)?;
    }
    request.body = match framing {
        Framing::Empty => Vec::new(),
        Framing::Length(length) => read_sized_body(stream, buffer, length, body_deadline)?,
        Framing::Chunked => read_chunked_body(stream, buffer, body_deadline)?,
    };
    Ok(request)
}

/// Reads until the blank line that ends the head; answers where it ends. Never holds more than
/// [`MAX_HEAD_BYTES`]: past that the head is refused without reading another byte.
fn read_head(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    deadline: Instant,
) -> Result<usize, ReadError> {
    loop {
        let scanned = buffer.len();
        if scanned >= MAX_HEAD_BYTES {
            return Err(Refusal::HeadTooLarge.into());
        }
        read_more(
            stream,
            buffer,
            MAX_HEAD_BYTES - scanned,
            deadline,
            Refusal::HeadTimeout,
        )?;
        // Only the new bytes (and the two before them) are searched, so a head sent a byte at
        // a time costs linear work, never a parse per byte.
        if let Some(end) = blank_line_end(buffer, scanned.saturating_sub(2)) {
            return Ok(end);
        }
    }
}

/// The index just past the first empty line (`\n\n` or `\n\r\n`) that starts at or after
/// `from`, where the head ends (httparse accepts a bare `\n` as a line end too).
fn blank_line_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut index = from;
    while index < bytes.len() {
        if bytes[index] == b'\n' {
            match bytes.get(index + 1..index + 3) {
                Some([b'\n', _]) => return Some(index + 2),
                Some([b'\r', b'\n']) => return Some(index + 3),
                None if bytes.get(index + 1) == Some(&b'\n') => return Some(index + 2),
                _ => {}
            }
        }
        index += 1;
    }
    None
}

fn parse_head(head: &[u8]) -> Result<Request, ReadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete request line")),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge.into()),
        Err(error) => return Err(malformed(format!("malformed request head: {error}"))),
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(malformed("incomplete request line"));
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let value = std::str::from_utf8(field.value)
            .map_err(|_| malformed(format!("header {}: the value is not UTF-8", field.name)))?;
        headers.push((field.name.to_string(), value.to_string()));
    }
    let hosts = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
        .count();
    // RFC 9112 3.2: one Host on HTTP/1.1, never two (the status page compares it with Origin).
    if hosts > 1 || (hosts == 0 && version == 1) {
        return Err(malformed("a request needs exactly one Host header"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
    };
    if version == 0 && request.header("transfer-encoding").is_some() {
        // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        return Err(malformed("Transfer-Encoding on an HTTP/1.0 request"));
    }
    Ok(request)
}

/// The body's framing, by RFC 9112 6 read strictly: anything two parsers could read two ways
/// (two lengths, a length beside a coding, a coding list not exactly `chunked`) is refused.
fn framing(request: &Request) -> Result<Framing, Refusal> {
    let lengths: Vec<&str> = request.headers("content-length").collect();
    let codings: Vec<&str> = request.headers("transfer-encoding").collect();
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(Refusal::Malformed(
                "Content-Length beside Transfer-Encoding".into(),
            ));
        }
        return chunked_only(&codings);
    }
    match lengths.as_slice() {
        [] => Ok(Framing::Empty),
        [length] => content_length(length),
        _ => Err(Refusal::Malformed("more than one Content-Length".into())),
    }
}

/// Digits only: no sign, no list, no spaces inside (httparse trims the ends). A length over
/// the limit is refused from the number alone, before any of the body is read.
fn content_length(text: &str) -> Result<Framing, Refusal> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Refusal::Malformed(format!(
            "malformed Content-Length {text:?}"
        )));
    }
    let length = text.bytes().fold(0u64, |length, digit| {
        length
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    });
    match usize::try_from(length) {
        Ok(0) => Ok(Framing::Empty),
        Ok(length) if length <= MAX_BODY_BYTES => Ok(Framing::Length(length)),
        _ => Err(Refusal::BodyTooLarge),
    }
}

/// Transfer codings HTTP defines; any other is unknown (501). Of these only `chunked` is
/// accepted, alone: the bodies here are small JSON, never compressed.
const KNOWN_CODINGS: [&str; 7] = [
    "chunked",
    "compress",
    "deflate",
    "gzip",
    "identity",
    "x-compress",
    "x-gzip",
];

fn chunked_only(values: &[&str]) -> Result<Framing, Refusal> {
    let codings: Vec<String> = values
        .iter()
        .flat_map(|value| value.split(','))
        .map(|coding| coding.trim().to_ascii_lowercase())
        .collect();
    if codings.iter().any(String::is_empty) {
        return Err(Refusal::Malformed(
            "Transfer-Encoding with an empty coding".into(),
        ));
    }
    if let Some(unknown) = codings
        .iter()
        .find(|coding| !KNOWN_CODINGS.contains(&coding.as_str()))
    {
        return Err(Refusal::UnknownCoding(unknown.clone()));
    }
    if codings != ["chunked"] {
        return Err(Refusal::Malformed(format!(
            "Transfer-Encoding {:?}: only chunked alone is accepted",
            codings.join(", ")
        )));
    }
    Ok(Framing::Chunked)
}

/// A `Content-Length` body, read to exactly that length (anything sent after it is never read:
/// the connection closes).
fn read_sized_body(
    stream: &mut TcpStream,
    mut received: Vec<u8>,
    length: usize,
    deadline: Instant,
) -> Result<Vec<u8>, ReadError> {
    received.truncate(length);
    while received.len() < length {
        let missing = length - received.len();
        read_more(
            stream,
            &mut received,
            missing,
            deadline,
            Refusal::BodyTimeout,
        )?;
    }
    Ok(received)
}

/// A `chunked` body, decoded as it arrives: each chunk's size is checked against the limit
/// before its data is read, chunk-size lines and trailers are bounded, trailers are dropped.
fn read_chunked_body(
    stream: &mut TcpStream,
    mut buffer: Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let (line_length, size) = loop {
            match httparse::parse_chunk_size(&buffer) {
                Ok(httparse::Status::Complete(parsed)) => break parsed,
                Ok(httparse::Status::Partial) if buffer.len() <= MAX_CHUNK_LINE => {
                    let room = MAX_CHUNK_LINE + 1 - buffer.len();
                    read_more(stream, &mut buffer, room, deadline, Refusal::BodyTimeout)?;
                }
                _ => return Err(malformed("malformed chunk size line")),
            }
        };
        // httparse reads an empty size as 0; a size has at least one digit.
        if !buffer[0].is_ascii_hexdigit() {
            return Err(malformed("malformed chunk size line"));
        }
        buffer.drain(..line_length);
        if size == 0 {
            break;
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|size| *size <= MAX_BODY_BYTES - body.len())
            .ok_or(Refusal::BodyTooLarge)?;
        while buffer.len() < size + 2 {
            let missing = size + 2 - buffer.len();
            read_more(stream, &mut buffer, missing, deadline, Refusal::BodyTimeout)?;
        }
        if &buffer[size..size + 2] != b"\r\n" {
            return Err(malformed("a chunk does not end where its size says"));
        }
        body.extend_from_slice(&buffer[..size]);
        buffer.drain(..size + 2);
    }
    skip_trailers(stream, buffer, deadline)?;
    Ok(body)
}

/// The trailer section after the last chunk: field lines, then an empty line.
fn skip_trailers(
    stream: &mut TcpStream,
    mut buffer: Vec<u8>,
    deadline: Instant,
) -> Result<(), ReadError> {
    let mut scanned: usize = 0;
    loop {
        if buffer.starts_with(b"\r\n") {
            return Ok(());
        }
        if let Some(end) = find(&buffer, b"\r\n\r\n", scanned.saturating_sub(3)) {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            return match httparse::parse_headers(&buffer[..end + 4], &mut fields) {
                Ok(httparse::Status::Complete(_)) => Ok(()),
                _ => Err(malformed("malformed trailer section")),
            };
        }
        if buffer.len() >= MAX_HEAD_BYTES {
            return Err(Refusal::HeadTooLarge.into());
        }
        scanned = buffer.len();
        let room = MAX_HEAD_BYTES - buffer.len();
        read_more(stream, &mut buffer, room, deadline, Refusal::BodyTimeout)?;
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|position| position + from)
}

/// Appends at least one and at most `most` bytes. Each read waits only for what is left until
/// `deadline`, so a client sending a byte now and then is cut off there all the same.
fn read_more(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    most: usize,
    deadline: Instant,
    late: Refusal,
) -> Result<(), ReadError> {
    let mut chunk = [0u8; READ_CHUNK];
    let wanted = most.min(READ_CHUNK);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(late.into());
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(ReadError::Gone)?;
        match stream.read(&mut chunk[..wanted]) {
            Ok(0) => {
                return Err(ReadError::Gone(io::Error::from(
                    io::ErrorKind::UnexpectedEof,
                )));
            }
            Ok(count) => {
                buffer.extend_from_slice(&chunk[..count]);
                return Ok(());
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(error) => return Err(ReadError::Gone(error)),
        }
    }
}

/// Writes all of `bytes` by `deadline`, however slowly the client reads.
fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(remaining))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(count) => bytes = &bytes[count..],
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A response before it is written. Every response closes its connection: one request per
/// connection keeps framing simple and leaves nothing for a second request to hide behind.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: String, content_type: &'static str) -> Reply {
        Reply {
            status,
            body,
            content_type,
            headers: Vec::new(),
        }
    }

    /// 303 See Other: after a form post, or to the login form.
    pub fn redirect(location: &str) -> Reply {
        Reply::text(303, String::new(), "text/plain; charset=utf-8")
            .with_header("Location", location)
    }

    pub fn error(status: u16, message: impl std::fmt::Display) -> Reply {
        Reply::json(status, &json!({"ok": false, "error": message.to_string()}))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire: status line, headers, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            httpdate::fmt_http_date(std::time::SystemTime::now()),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            // Values are ours, never a client's; a line break would still split the response.
            if value.bytes().any(|byte| byte.is_ascii_control()) {
                log::error!("http: header {name} dropped: its value holds a control character");
                continue;
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }

    /// Writes the response within [`WRITE_TIMEOUT`]; the connection closes when `stream` drops.
    pub fn write_to(&self, stream: &mut TcpStream) {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        if let Err(error) = write_by(stream, &self.to_bytes(), deadline) {
            log::debug!("http: the client left before the response was written: {error}");
        }
    }

    /// One write without waiting, for the accept loop, which must never block on a client: a
    /// short answer fits in a fresh connection's send buffer, and one that does not is dropped.
    pub fn write_without_waiting(&self, stream: &mut TcpStream) {
        if stream.set_nonblocking(true).is_ok() {
            let _ = stream.write(&self.to_bytes());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Sends `bytes` on a loopback connection, then reads one request from the other end.
    fn read_sent(bytes: &[u8]) -> Result<Request, ReadError> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let bytes = bytes.to_vec();
        let sender = std::thread::spawn(move || {
            // The server may stop reading early; the end of what was sent ends the stream.
            let _ = client.write_all(&bytes);
            let _ = client.shutdown(std::net::Shutdown::Write);
            client
        });
        let (mut server, _) = listener.accept().unwrap();
        let read = read_request(&mut server, Instant::now() + Duration::from_secs(5));
        drop(server);
        drop(sender.join().unwrap());
        read
    }

    fn refusal(bytes: &[u8]) -> Refusal {
        match read_sent(bytes) {
            Err(ReadError::Refused(refusal)) => refusal,
            other => panic!(
                "{:?}: expected a refusal, got {other:?}",
                String::from_utf8_lossy(bytes)
            ),
        }
    }

    #[test]
    fn a_plain_request_is_read_with_its_body_and_query() {
        let request = read_sent(
            b"POST /api/v1/cron/cleanup?dryRun=true HTTP/1.1\r\nHost: x\r\nX-Cron-Secret: s\r\nContent-Length: 5\r\n\r\nhello and more",
        )
        .unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/v1/cron/cleanup");
        assert_eq!(request.query, "dryRun=true");
        assert_eq!(request.header("x-cron-secret"), Some("s"));
        assert_eq!(request.header("X-CRON-SECRET"), Some("s"));
        assert_eq!(request.body, b"hello");
        let bare = read_sent(b"GET /healthz HTTP/1.0\n\n").unwrap();
        assert_eq!((bare.path.as_str(), bare.body.len()), ("/healthz", 0));
    }

    #[test]
    fn chunked_bodies_are_decoded_and_bounded() {
        let request = read_sent(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n",
        )
        .unwrap();
        assert_eq!(request.body, b"{\"a\":1}");
        let no_trailers = read_sent(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(no_trailers.body, b"ok");
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (chunks, expected) in [
            (&b"100001\r\n"[..], Refusal::BodyTooLarge),
            (b"fffffffffffffff\r\n", Refusal::BodyTooLarge),
            (
                b"\r\nok\r\n0\r\n\r\n",
                Refusal::Malformed("malformed chunk size line".into()),
            ),
            (
                b"-1\r\n",
                Refusal::Malformed("malformed chunk size line".into()),
            ),
            (
                b"2\r\nokay\r\n0\r\n\r\n",
                Refusal::Malformed("a chunk does not end where its size says".into()),
            ),
        ] {
            assert_eq!(refusal(&[&head[..], chunks].concat()), expected);
        }
        // Many chunks that add up past the limit.
        let mut many = head.to_vec();
        for _ in 0..17 {
            many.extend_from_slice(b"10000\r\n");
            many.extend(std::iter::repeat_n(b'a', 0x10000));
            many.extend_from_slice(b"\r\n");
        }
        assert_eq!(refusal(&many), Refusal::BodyTooLarge);
    }

    #[test]
    fn framing_two_parsers_could_read_differently_is_refused() {
        let with = |headers: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n");
        for (headers, status) in [
            ("Content-Length: 5\r\nContent-Length: 5", 400),
            ("Content-Length: 5\r\nContent-Length: 6", 400),
            ("Content-Length: 5, 5", 400),
            ("Content-Length: +5", 400),
            ("Content-Length: 0x10", 400),
            ("Content-Length: 5 5", 400),
            ("Content-Length:", 400),
            ("Content-Length: 5\r\nTransfer-Encoding: chunked", 400),
            ("Transfer-Encoding: chunked\r\nContent-Length: 5", 400),
            ("Transfer-Encoding: gzip, chunked", 400),
            ("Transfer-Encoding: chunked, chunked", 400),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                400,
            ),
            ("Transfer-Encoding: identity", 400),
            ("Transfer-Encoding: ", 400),
            ("Transfer-Encoding: chunked,", 400),
            ("Transfer-Encoding: foo, chunked", 501),
            ("Transfer-Encoding: chunked;q=1", 501),
            ("Content-Length: 100000000000000", 413),
            ("Content-Length: 18446744073709551615", 413),
            ("Content-Length: 99999999999999999999999999", 413),
            ("Content-Length: 1048577", 413),
        ] {
            assert_eq!(
                refusal(with(headers).as_bytes()).status(),
                status,
                "{headers}"
            );
        }
        assert_eq!(
            refusal(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").status(),
            400
        );
        for head in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
            b"GET / HTTP/1.1\rHost: x\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Bytes: \xff\xfe\r\n\r\n",
        ] {
            assert_eq!(
                refusal(head).status(),
                400,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn heads_past_the_limit_are_refused_without_reading_on() {
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(refusal(&head), Refusal::HeadTooLarge);
        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for n in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{n}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(refusal(&many), Refusal::HeadTooLarge);
        // A head ending exactly at the limit is fine.
        let mut exact = b"GET / HTTP/1.1\r\nHost: x\r\nX-Fill: ".to_vec();
        exact.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES - exact.len() - 4));
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exact.len(), MAX_HEAD_BYTES);
        assert!(read_sent(&exact).is_ok());
    }

    #[test]
    fn a_head_or_body_cut_short_leaves_no_one_to_answer() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        ] {
            assert!(matches!(read_sent(bytes), Err(ReadError::Gone(_))));
        }
    }

    #[test]
    fn a_client_that_expects_100_continue_is_told_to_send_only_a_body_within_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(address).unwrap();
            stream
                .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
                .unwrap();
            let mut interim = [0u8; 25];
            stream.read_exact(&mut interim).unwrap();
            stream.write_all(b"ok").unwrap();
            interim
        });
        let (mut server, _) = listener.accept().unwrap();
        let request = read_request(&mut server, Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(request.body, b"ok");
        assert_eq!(&client.join().unwrap(), b"HTTP/1.1 100 Continue\r\n\r\n");

        let too_large = refusal(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n",
        );
        assert_eq!(too_large, Refusal::BodyTooLarge);
    }

    #[test]
    fn the_end_of_a_head_is_found_in_new_bytes_only() {
        assert_eq!(blank_line_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(blank_line_end(b"GET / HTTP/1.1\n\nbody", 0), Some(16));
        assert_eq!(blank_line_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        assert_eq!(blank_line_end(b"a\n\n", 1), Some(3));
        assert_eq!(blank_line_end(b"a\r\n\r\n", 2), Some(5));
    }

    #[test]
    fn replies_carry_length_and_close() {
        let reply = Reply::error(413, "too big");
        let text = String::from_utf8(reply.to_bytes()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"));
        let length = format!("Content-Length: {}\r\n", reply.body.len());
        assert!(text.contains(&length), "{text}");
        assert!(text.ends_with(&format!("\r\n\r\n{}", reply.body)), "{text}");
        let injected = Reply::redirect("/").with_header("Location", "/\r\nSet-Cookie: x=y");
        assert!(
            !String::from_utf8(injected.to_bytes())
                .unwrap()
                .contains("x=y")
        );
    }
}
