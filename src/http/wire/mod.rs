//! One request read off a connection and one response written to it: httparse parses the head,
//! and everything around it is strict framing and the contract's limits (a head of at most
//! 64 KiB within 10 s, a body of at most 1 MiB within 30 s, one `Content-Length` or `chunked`
//! and nothing else), so no client can make a worker wait, buffer without bound, or read a
//! request differently from a proxy in front of it.
//!
//! `head.rs` reads the head, parses it and decides how the body is framed; `body.rs` reads a
//! body so framed; `deadline.rs` is the socket read and write that every step bounds by its
//! deadline; `reply.rs` is the response.

mod body;
mod deadline;
mod head;
mod reply;

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use body::{read_chunked_body, read_sized_body};
use deadline::write_by;
use head::{Framing, framing, parse_head, read_head};
pub use reply::Reply;

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

/// A request whose head and body have been read in full.
#[derive(Clone)]
pub struct Request {
    pub method: String,
    /// The request target before `?`, as sent (not percent-decoded).
    pub path: String,
    /// After `?`, empty without one.
    pub query: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's address, for the log line of a refused authentication.
    pub peer: Option<std::net::SocketAddr>,
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

    /// The same request as a GET (a HEAD answered as GET is).
    pub fn as_get(&self) -> Request {
        Request {
            method: "GET".into(),
            ..self.clone()
        }
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
            peer: None,
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
    #[error(
        "the listener holds as many request bodies as it may ({BODY_BUDGET_BYTES} bytes); try again"
    )]
    BodiesFull,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) => 400,
            Refusal::HeadTimeout | Refusal::BodyTimeout => 408,
            Refusal::BodyTooLarge => 413,
            Refusal::HeadTooLarge => 431,
            Refusal::UnknownCoding(_) => 501,
            Refusal::BodiesFull => 503,
        }
    }
}

/// What ends reading a request.
#[derive(Debug)]
pub enum ReadError {
    /// Answered with the refusal's status, then closed.
    Refused(Refusal),
    /// Answered on its head alone (an unauthenticated request to a protected route), its body
    /// never read: the reply, then the connection closed.
    Answered(Reply),
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

/// The most bytes all request bodies being read or answered may hold together, whatever the
/// number of clients: past it a request is answered 503 before its body is read.
pub const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of request bodies reserved now, across the process's connections.
static BODY_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A body's share of [`BODY_BUDGET_BYTES`], given back when dropped (its reply written).
pub struct BodyPermit(usize);

impl BodyPermit {
    fn take(bytes: usize) -> Result<BodyPermit, Refusal> {
        use std::sync::atomic::Ordering;
        BODY_BYTES
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + bytes <= BODY_BUDGET_BYTES).then_some(used + bytes)
            })
            .map(|_| BodyPermit(bytes))
            .map_err(|_| Refusal::BodiesFull)
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        BODY_BYTES.fetch_sub(self.0, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Reads one request: the head by `head_deadline`, then its body within [`BODY_TIMEOUT`],
/// unless `gate` answers the head first (then no body is read, and no `100 Continue` sent).
/// The body's bytes (its announced length; the limit for a chunked one) are reserved from
/// [`BODY_BUDGET_BYTES`] before it is read, and held by the answered permit.
pub fn read_request(
    stream: &mut TcpStream,
    head_deadline: Instant,
    gate: &dyn Fn(&Request) -> Option<Reply>,
) -> Result<(Request, BodyPermit), ReadError> {
    let mut buffer = Vec::new();
    let head_end = read_head(stream, &mut buffer, head_deadline)?;
    let mut request = parse_head(&buffer[..head_end])?;
    request.peer = stream.peer_addr().ok();
    let framing = framing(&request)?;
    if let Some(reply) = gate(&request) {
        return Err(ReadError::Answered(reply));
    }
    let permit = BodyPermit::take(match framing {
        Framing::Empty => 0,
        Framing::Length(length) => length,
        Framing::Chunked => MAX_BODY_BYTES,
    })?;
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
    Ok((request, permit))
}

/// Closes a connection whose request was answered before its body was read. The body is
/// never buffered: what arrives for a short while, a bounded amount, is read and dropped, so
/// the client gets the answer rather than a reset (closing a socket with unread data resets it).
pub fn close_unread(stream: &mut TcpStream) {
    const DISCARD_BYTES: usize = 64 * 1024;
    const DISCARD_FOR: Duration = Duration::from_millis(500);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + DISCARD_FOR;
    let mut scratch = [0u8; 8 * 1024];
    let mut discarded = 0;
    while discarded < DISCARD_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match std::io::Read::read(stream, &mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(read) => discarded += read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Sends `bytes` on a loopback connection, then reads one request from the other end.
    pub(super) fn read_sent(bytes: &[u8]) -> Result<Request, ReadError> {
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
        let read = read_request(
            &mut server,
            Instant::now() + Duration::from_secs(5),
            &|_| None,
        );
        drop(server);
        drop(sender.join().unwrap());
        read.map(|(request, _)| request)
    }

    pub(super) fn refusal(bytes: &[u8]) -> Refusal {
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
        let refused = |bytes: &[u8]| match read_sent(bytes) {
            Err(ReadError::Refused(Refusal::Malformed(message))) => message,
            other => panic!("{other:?}"),
        };
        // A bare CR is refused as it arrives, not waited out to the head's deadline.
        assert!(refused(b"GET /healthz HTTP/1.1\rHost: x\r\n\r\n").contains("bare CR"));
        assert!(refused(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\rb").contains("bare CR"));
        let bare = read_sent(b"GET /healthz HTTP/1.0\n\n").unwrap();
        assert_eq!((bare.path.as_str(), bare.body.len()), ("/healthz", 0));
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
        let (request, _) = read_request(
            &mut server,
            Instant::now() + Duration::from_secs(5),
            &|_| None,
        )
        .unwrap();
        assert_eq!(request.body, b"ok");
        assert_eq!(&client.join().unwrap(), b"HTTP/1.1 100 Continue\r\n\r\n");

        let too_large = refusal(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n",
        );
        assert_eq!(too_large, Refusal::BodyTooLarge);
    }
}
