//! The request body, by the head's framing: exactly `Content-Length` bytes, or a `chunked`
//! body decoded as it arrives, each chunk checked against the body's limit before it is read.

use std::net::TcpStream;
use std::time::Instant;

use super::deadline::read_more;
use super::{MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, ReadError, Refusal, malformed};

/// A chunk-size line (with its extensions) longer than this is malformed.
const MAX_CHUNK_LINE: usize = 1024;

/// A `Content-Length` body, read to exactly that length (anything sent after it is never read:
/// the connection closes).
pub(super) fn read_sized_body(
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
pub(super) fn read_chunked_body(
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

#[cfg(test)]
mod tests {
    use super::super::tests::{read_sent, refusal};
    use super::*;

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
}
