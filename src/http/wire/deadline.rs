//! Socket reads and writes bounded by a deadline: each waits only for the time left, so a
//! client trickling a byte now and then is cut off on time all the same.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use super::{ReadError, Refusal};

/// One read from the socket: small, so a trickling client costs little per byte.
const READ_CHUNK: usize = 8 * 1024;

/// Appends at least one and at most `most` bytes. Each read waits only for what is left until
/// `deadline`, so a client sending a byte now and then is cut off there all the same.
pub(super) fn read_more(
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
pub(super) fn write_by(
    stream: &mut TcpStream,
    mut bytes: &[u8],
    deadline: Instant,
) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::super::ReadError;
    use super::super::tests::read_sent;

    #[test]
    fn a_head_or_body_cut_short_leaves_no_one_to_answer() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        ] {
            assert!(matches!(read_sent(bytes), Err(ReadError::Gone(_))));
        }
    }
}
