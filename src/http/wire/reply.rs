//! The response: status line, headers and body, written within the write deadline; every
//! response closes its connection.

use std::io::Write;
use std::net::TcpStream;
use std::time::Instant;

use serde_json::{Value, json};

use super::WRITE_TIMEOUT;
use super::deadline::write_by;

/// A response before it is written. Every response closes its connection: one request per
/// connection keeps framing simple and leaves nothing for a second request to hide behind.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// An answer to HEAD: the head of the GET's answer, its `Content-Length` included.
    body_omitted: bool,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            content_type: "application/json",
            headers: Vec::new(),
            body_omitted: false,
        }
    }

    pub fn text(status: u16, body: String, content_type: &'static str) -> Reply {
        Reply {
            status,
            body,
            content_type,
            headers: Vec::new(),
            body_omitted: false,
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

    /// This answer as HEAD has it: everything but the body.
    pub fn without_body(mut self) -> Reply {
        self.body_omitted = true;
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
        if !self.body_omitted {
            bytes.extend_from_slice(self.body.as_bytes());
        }
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
