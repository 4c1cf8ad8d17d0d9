//! NDJSON export files: one interaction row as one line (typed fields, `payload` embedded as
//! JSON), written plain, gzipped or zstd-compressed; and the same compression for archives.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};

use flate2::write::GzEncoder;
use serde_json::value::RawValue;

use super::{Encoder, Filtered, Hashed, Ids, Pushed, Subject};
use crate::config::Compression;
use crate::export::row::Row;

/// A file's lines are compressed and written once this much is buffered.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// zstd's level for export files and archives: most of its saving at a fraction of the time
/// of higher levels.
const ZSTD_LEVEL: i32 = 1;
/// zstd's window (2^17 = 128 KiB) rather than level 1's 512 KiB: a writer keeps up to 32
/// files open, each with its own compressor, and NDJSON lines repeat within far less.
const ZSTD_WINDOW_LOG: u32 = 17;

/// Where a file's lines go: straight to the file, or through a compressor; either way hashed
/// as the bytes land on disk, which is what the manifest and storage verify.
enum Sink<W: Write> {
    Plain(W),
    Gzip(GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Sink<W> {
    fn new(out: W, compression: Compression) -> std::io::Result<Sink<W>> {
        Ok(match compression {
            Compression::None => Sink::Plain(out),
            // Level 1: most of gzip's saving on NDJSON at a fraction of its default's time.
            Compression::Gzip => Sink::Gzip(GzEncoder::new(out, flate2::Compression::fast())),
            Compression::Zstd => {
                let mut encoder = zstd::Encoder::new(out, ZSTD_LEVEL)?;
                encoder.window_log(ZSTD_WINDOW_LOG)?;
                Sink::Zstd(encoder)
            }
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Plain(out) => out.write_all(bytes),
            Sink::Gzip(encoder) => encoder.write_all(bytes),
            Sink::Zstd(encoder) => encoder.write_all(bytes),
        }
    }

    /// Ends the stream (a compressor's trailer) and answers what it wrote to.
    fn finish(self) -> std::io::Result<W> {
        match self {
            Sink::Plain(out) => Ok(out),
            Sink::Gzip(encoder) => encoder.finish(),
            Sink::Zstd(encoder) => encoder.finish(),
        }
    }
}

/// `lines` compressed as an archive is stored (the name takes [`Compression::suffix`]).
pub fn compressed(lines: &[u8], compression: Compression) -> std::io::Result<Vec<u8>> {
    let mut sink = Sink::new(Vec::new(), compression)?;
    sink.write_all(lines)?;
    sink.finish()
}

/// The uncompressed bytes of an NDJSON file compressed as `compression` says.
fn decompressed(file: File, compression: Compression) -> std::io::Result<Box<dyn Read>> {
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => Box::new(zstd::Decoder::new(file)?),
    })
}

/// The lines of an NDJSON file, without their `\n`, blank ones skipped.
fn lines(
    file: File,
    compression: Compression,
) -> std::io::Result<impl Iterator<Item = std::io::Result<Vec<u8>>>> {
    let lines = BufReader::with_capacity(1 << 18, decompressed(file, compression)?).split(b'\n');
    Ok(lines.filter(|line| !matches!(line, Ok(line) if line.iter().all(u8::is_ascii_whitespace))))
}

/// Whose a line is (the rest of it is skipped, not kept).
#[derive(serde::Deserialize)]
struct Owner<'a> {
    #[serde(borrow)]
    tenant_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    customer_id: std::borrow::Cow<'a, str>,
}

fn owned_by(line: &[u8], subject: Subject<'_>) -> std::io::Result<bool> {
    let owner: Owner<'_> = serde_json::from_slice(line).map_err(std::io::Error::other)?;
    Ok(subject.owns(&owner.tenant_id, &owner.customer_id))
}

/// `source`'s lines into `out` as they are, leaving out `subject`'s.
pub fn without(
    source: File,
    out: Hashed<File>,
    compression: Compression,
    subject: Subject<'_>,
) -> std::io::Result<Filtered> {
    let mut sink = Sink::new(out, compression)?;
    let (mut kept, mut left_out) = (0, 0);
    let mut buffer = Vec::with_capacity(WRITE_BUFFER_BYTES);
    for line in lines(source, compression)? {
        let line = line?;
        if owned_by(&line, subject)? {
            left_out += 1;
            continue;
        }
        kept += 1;
        buffer.extend_from_slice(&line);
        buffer.push(b'\n');
        if buffer.len() >= WRITE_BUFFER_BYTES {
            sink.write_all(&buffer)?;
            buffer.clear();
        }
    }
    sink.write_all(&buffer)?;
    Ok(Filtered {
        file: sink.finish()?,
        kept,
        left_out,
    })
}

/// `subject`'s lines of `source`, each as its object.
pub fn rows_of(
    source: File,
    compression: Compression,
    subject: Subject<'_>,
) -> std::io::Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    for line in lines(source, compression)? {
        let line = line?;
        if owned_by(&line, subject)? {
            rows.push(serde_json::from_slice(&line).map_err(std::io::Error::other)?);
        }
    }
    Ok(rows)
}

/// The id of each line of an NDJSON file, compressed as `compression` says.
pub fn ids(file: File, compression: Compression) -> std::io::Result<Ids> {
    let reader = decompressed(file, compression)?;
    /// What a line is read for: its id alone (the rest is skipped, not kept).
    #[derive(serde::Deserialize)]
    struct Line {
        id: String,
    }
    let lines = BufReader::with_capacity(1 << 18, reader).split(b'\n');
    Ok(Box::new(lines.filter_map(|line| {
        match line {
            Err(error) => Some(Err(error)),
            Ok(line) if line.iter().all(u8::is_ascii_whitespace) => None,
            Ok(line) => Some(
                serde_json::from_slice::<Line>(&line)
                    .map(|line| line.id)
                    .map_err(std::io::Error::other),
            ),
        }
    })))
}

/// An NDJSON export file being written: lines are encoded into a buffer, which goes to the
/// sink a block at a time.
pub struct NdjsonEncoder {
    sink: Sink<Hashed<File>>,
    buffer: Vec<u8>,
}

impl NdjsonEncoder {
    pub fn new(file: Hashed<File>, compression: Compression) -> std::io::Result<NdjsonEncoder> {
        Ok(NdjsonEncoder {
            sink: Sink::new(file, compression)?,
            buffer: Vec::new(),
        })
    }
}

impl Encoder for NdjsonEncoder {
    fn push(&mut self, row: &Row<'_>) -> std::io::Result<Pushed> {
        let before = self.buffer.len();
        let payload_kept_as_string = append_line(&mut self.buffer, row);
        let raw_bytes = (self.buffer.len() - before) as u64;
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(Pushed {
            raw_bytes,
            payload_kept_as_string,
        })
    }

    fn buffered(&self) -> usize {
        self.buffer.len()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<Hashed<File>> {
        self.flush()?;
        self.sink.finish()
    }
}

/// The deepest nesting of arrays and objects a payload is embedded with. Deeper JSON is kept as
/// a string: readers refuse it (DuckDB past 128), and one such line fails the whole read.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Appends `row` as one `\n`-terminated JSON object. A `payload` that is valid JSON no deeper
/// than [`MAX_PAYLOAD_DEPTH`] is embedded as it is; any other is kept, as a JSON string, so no
/// row is dropped. Returns whether the payload had to be kept as a string.
pub fn append_line(out: &mut Vec<u8>, row: &Row<'_>) -> bool {
    out.extend_from_slice(b"{\"id\":");
    push_string(out, row.id);
    out.extend_from_slice(b",\"tenant_id\":");
    push_string(out, row.tenant_id);
    out.extend_from_slice(b",\"customer_id\":");
    push_string(out, row.customer_id);
    out.extend_from_slice(b",\"channel\":");
    push_string(out, row.channel);
    out.extend_from_slice(b",\"outcome\":");
    push_string(out, row.outcome);
    out.extend_from_slice(b",\"payload\":");
    let payload_is_json = embeddable(row.payload);
    if payload_is_json {
        // RawValue accepts surrounding whitespace; a newline inside the line would split it.
        out.extend(
            row.payload
                .trim()
                .bytes()
                .filter(|byte| *byte != b'\n' && *byte != b'\r'),
        );
    } else {
        push_string(out, row.payload);
    }
    out.extend_from_slice(b",\"created_at\":");
    push_string(out, row.created_at);
    out.extend_from_slice(b"}\n");
    !payload_is_json
}

/// Whether a payload is JSON every reader takes as it is: valid, and no deeper than
/// [`MAX_PAYLOAD_DEPTH`].
pub fn embeddable(payload: &str) -> bool {
    serde_json::from_str::<&RawValue>(payload).is_ok()
        && nesting_depth(payload) <= MAX_PAYLOAD_DEPTH
}

fn push_string(out: &mut Vec<u8>, value: &str) {
    // Writing to a Vec cannot fail, and serde_json escapes every string it is given.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// How deeply arrays and objects nest in valid JSON `text`.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => {
                // Skip the string, and any escaped quote inside it.
                while let Some(inner) = bytes.next() {
                    match inner {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(payload: &'a str, id: &'a str) -> crate::export::row::Row<'a> {
        crate::export::row::Row {
            id,
            tenant_id: "acme",
            customer_id: "c\"1",
            channel: "email",
            outcome: "opened",
            payload,
            created_at: "2026-03-30T02:00:00.000Z",
        }
    }

    #[test]
    fn a_line_is_one_typed_json_object_with_the_payload_embedded() {
        let mut out = Vec::new();
        let as_string = append_line(
            &mut out,
            &row("{\"campaign\": \"spring\",\n \"score\": 0.5}", "i-1"),
        );
        assert!(!as_string);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["payload"]["campaign"], "spring");
        assert_eq!(value["payload"]["score"], 0.5);
        assert_eq!(value["customer_id"], "c\"1");
        assert_eq!(value["created_at"], "2026-03-30T02:00:00.000Z");
    }

    #[test]
    fn a_payload_that_is_not_json_is_kept_as_a_string() {
        let mut out = Vec::new();
        assert!(append_line(
            &mut out,
            &row("{broken\nline", "weird\u{0}id\u{2028}")
        ));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["payload"], "{broken\nline");
        assert_eq!(value["id"], "weird\u{0}id\u{2028}");
    }

    #[test]
    fn a_payload_nested_deeper_than_readers_take_is_kept_as_a_string() {
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let embedded = |payload: &str| {
            let mut out = Vec::new();
            let as_string = append_line(&mut out, &row(payload, "i"));
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            (as_string, value["payload"].is_string())
        };
        assert_eq!(embedded(&deep(MAX_PAYLOAD_DEPTH)), (false, false));
        assert_eq!(embedded(&deep(MAX_PAYLOAD_DEPTH + 1)), (true, true));
        assert_eq!(embedded(&deep(200)), (true, true));
        // Brackets inside strings do not count.
        let quoted = format!("{{\"k\": \"{}\\\"\"}}", "[".repeat(100));
        assert_eq!(embedded(&quoted), (false, false));
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}],"c":"]]]"}"#), 4);
    }
}
