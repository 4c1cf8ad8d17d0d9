//! A raw-socket client for framing cases: it sends exactly the bytes a test gives, however
//! malformed, reads everything the server sends until it closes, and splits that into
//! responses, so a test can tell one answer from two.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub struct Raw {
    stream: TcpStream,
    pub connected_at: Instant,
}

impl Raw {
    pub fn connect(address: SocketAddr) -> Raw {
        let stream = TcpStream::connect(address).expect("connect");
        Raw {
            stream,
            connected_at: Instant::now(),
        }
    }

    /// Connects and sends `bytes`.
    pub fn send_to(address: SocketAddr, bytes: &[u8]) -> Raw {
        let mut raw = Raw::connect(address);
        assert!(
            raw.send(bytes),
            "the server closed before the request was sent"
        );
        raw
    }

    /// The same connection, for a second thread (one sends while the other reads).
    pub fn try_clone(&self) -> Raw {
        Raw {
            stream: self.stream.try_clone().expect("clone the connection"),
            connected_at: self.connected_at,
        }
    }

    /// Sends `bytes`; false once the server has closed the connection.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Everything the server sends until it closes the connection, or `None` if it is still
    /// open after `limit`.
    pub fn read_until_closed(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut received = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return None;
            }
            self.stream
                .set_read_timeout(Some(remaining))
                .expect("read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(received),
                Ok(count) => received.extend_from_slice(&chunk[..count]),
                // A server that closes with unread input resets the connection; what it
                // sent before is still read first.
                Err(error) if error.kind() == ErrorKind::ConnectionReset => return Some(received),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => panic!("reading from the server: {error}"),
            }
        }
    }

    /// The status of every response the server sends before it closes, within `limit`.
    pub fn statuses_until_closed(&mut self, limit: Duration) -> Vec<u16> {
        let received = self
            .read_until_closed(limit)
            .unwrap_or_else(|| panic!("the server kept the connection open past {limit:?}"));
        statuses(&received)
    }
}

/// Splits `bytes` into responses (each framed by its `Content-Length`) and answers their
/// status codes; panics on bytes that are not a response.
pub fn statuses(mut bytes: &[u8]) -> Vec<u16> {
    let mut found = Vec::new();
    while !bytes.is_empty() {
        let text = String::from_utf8_lossy(bytes).to_string();
        let head_end = text
            .find("\r\n\r\n")
            .unwrap_or_else(|| panic!("an incomplete response: {text:?}"));
        let head = &text[..head_end];
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {text:?}"));
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().expect("Content-Length"))
            })
            .unwrap_or(0);
        found.push(status);
        let end = (head_end + 4 + length).min(bytes.len());
        bytes = &bytes[end..];
    }
    found
}
