//! The request head: read up to its blank line within the head's limits, parsed by httparse,
//! and the body's framing decided from its headers, strictly.

use std::net::TcpStream;
use std::time::Instant;

use super::deadline::read_more;
use super::{MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, ReadError, Refusal, Request, malformed};

/// How the body of a request is delimited.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Framing {
    Empty,
    /// The announced length, within the limit.
    Length(usize),
    Chunked,
}

/// Reads until the blank line that ends the head; answers where it ends. Never holds more than
/// [`MAX_HEAD_BYTES`]: past that the head is refused without reading another byte.
pub(super) fn read_head(
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
        let end = blank_line_end(buffer, scanned.saturating_sub(2));
        // RFC 9112 2.2: a CR not followed by LF is refused at once, not waited out; one that
        // follows the head's end is the body's.
        let head = end.map_or(&buffer[..], |end| &buffer[..end]);
        if has_bare_cr(head, scanned.saturating_sub(1)) {
            return Err(malformed(
                "a bare CR (not followed by LF) in the request head",
            ));
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// Whether a CR at or after `from` is followed by anything but LF (a CR still waiting for its
/// next byte is not judged yet).
fn has_bare_cr(bytes: &[u8], from: usize) -> bool {
    bytes
        .get(from..)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .any(|(at, byte)| {
            *byte == b'\r' && bytes.get(from + at + 1).is_some_and(|next| *next != b'\n')
        })
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

pub(super) fn parse_head(head: &[u8]) -> Result<Request, ReadError> {
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
        peer: None,
    };
    if version == 0 && request.header("transfer-encoding").is_some() {
        // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        return Err(malformed("Transfer-Encoding on an HTTP/1.0 request"));
    }
    Ok(request)
}

/// The body's framing, by RFC 9112 6 read strictly: anything two parsers could read two ways
/// (two lengths, a length beside a coding, a coding list not exactly `chunked`) is refused.
pub(super) fn framing(request: &Request) -> Result<Framing, Refusal> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{read_sent, refusal};
    use super::*;

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
    fn the_end_of_a_head_is_found_in_new_bytes_only() {
        assert_eq!(blank_line_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(blank_line_end(b"GET / HTTP/1.1\n\nbody", 0), Some(16));
        assert_eq!(blank_line_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        assert_eq!(blank_line_end(b"a\n\n", 1), Some(3));
        assert_eq!(blank_line_end(b"a\r\n\r\n", 2), Some(5));
    }
}
