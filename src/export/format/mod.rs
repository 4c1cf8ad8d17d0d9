//! The seam for export file formats: what a format is named and served as, and an encoder
//! that takes a table's rows and finishes a whole file (Parquet writes a footer). The writer,
//! the manifest, the storage and the recovery that reads files back ask the format, never
//! the file name's guess.

pub mod ndjson;
pub mod parquet;

use std::fs::File;
use std::io::Write;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{Compression, ExportFormat};
use crate::export::row::Row;

/// An export file's format: NDJSON (plain or compressed) or Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Ndjson(Compression),
    Parquet,
}

impl FileFormat {
    /// The format `EXPORT_FORMAT` and `EXPORT_COMPRESSION` name (validated together).
    pub fn configured(format: ExportFormat, compression: Compression) -> FileFormat {
        match format {
            ExportFormat::Ndjson => FileFormat::Ndjson(compression),
            ExportFormat::Parquet => FileFormat::Parquet,
        }
    }

    /// The format of a file edgecron wrote, by its name.
    pub fn of_path(path: &str) -> Option<FileFormat> {
        [
            FileFormat::Parquet,
            FileFormat::Ndjson(Compression::Gzip),
            FileFormat::Ndjson(Compression::Zstd),
            FileFormat::Ndjson(Compression::None),
        ]
        .into_iter()
        .find(|format| path.ends_with(&format!(".{}", format.extension())))
    }

    /// The name the manifest and the export metrics give it.
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Ndjson(_) => "ndjson",
            FileFormat::Parquet => "parquet",
        }
    }

    /// A file's extension, after `batch-…`.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Ndjson(Compression::None) => "json",
            FileFormat::Ndjson(Compression::Gzip) => "json.gz",
            FileFormat::Ndjson(Compression::Zstd) => "json.zst",
            FileFormat::Parquet => "parquet",
        }
    }

    /// The content type storage serves it with: the file as it is, never a transfer encoding
    /// a client would undo.
    pub fn content_type(self) -> &'static str {
        match self {
            FileFormat::Ndjson(Compression::None) => "application/x-ndjson",
            FileFormat::Ndjson(Compression::Gzip) => "application/gzip",
            FileFormat::Ndjson(Compression::Zstd) => "application/zstd",
            FileFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The ids of the rows of a file in this format, in file order (a capture gap's recovery
    /// reads what the committed files hold).
    pub fn ids(self, file: File) -> std::io::Result<Ids> {
        match self {
            FileFormat::Ndjson(compression) => ndjson::ids(file, compression),
            FileFormat::Parquet => parquet::ids(file),
        }
    }

    /// Copies the rows of `source` into `out` in this format, leaving out `subject`'s (an
    /// erasure's rewrite): the other rows as they were (NDJSON lines byte for byte).
    pub fn without(
        self,
        source: File,
        out: Hashed<File>,
        subject: Subject<'_>,
    ) -> std::io::Result<Filtered> {
        match self {
            FileFormat::Ndjson(compression) => ndjson::without(source, out, compression, subject),
            FileFormat::Parquet => parquet::without(source, out, subject),
        }
    }

    /// `subject`'s rows in `source`, each as the object its NDJSON line is (an access request).
    pub fn rows_of(self, source: File, subject: Subject<'_>) -> std::io::Result<Vec<Value>> {
        match self {
            FileFormat::Ndjson(compression) => ndjson::rows_of(source, compression, subject),
            FileFormat::Parquet => parquet::rows_of(source, subject),
        }
    }

    /// An encoder writing a new file into `file`.
    pub fn encoder(self, file: Hashed<File>) -> std::io::Result<Box<dyn Encoder>> {
        Ok(match self {
            FileFormat::Ndjson(compression) => {
                Box::new(ndjson::NdjsonEncoder::new(file, compression)?)
            }
            FileFormat::Parquet => Box::new(parquet::ParquetEncoder::new(file)?),
        })
    }
}

/// Whose rows erasure and access select: one customer of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    pub tenant_id: &'a str,
    pub customer_id: &'a str,
}

impl Subject<'_> {
    fn owns(&self, tenant_id: &str, customer_id: &str) -> bool {
        self.tenant_id == tenant_id && self.customer_id == customer_id
    }
}

/// A file rewritten without a subject's rows.
pub struct Filtered {
    pub file: Hashed<File>,
    pub kept: u64,
    pub left_out: u64,
}

/// The ids of a file's rows, read as they are asked for.
pub type Ids = Box<dyn Iterator<Item = std::io::Result<String>>>;

/// What adding one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The row's size before compression (its NDJSON line, or its column values).
    pub raw_bytes: u64,
    /// Its payload was not JSON a reader takes, and is kept as a JSON string.
    pub payload_kept_as_string: bool,
}

/// One export file being written, row by row.
pub trait Encoder: Send {
    fn push(&mut self, row: &Row<'_>) -> std::io::Result<Pushed>;
    /// Bytes of rows held in memory, not yet written: the writer keeps the sum over its open
    /// files within a budget.
    fn buffered(&self) -> usize;
    /// Writes what is held (a block of lines, a row group).
    fn flush(&mut self) -> std::io::Result<()>;
    /// Ends the file (a compressor's trailer, Parquet's footer) and answers it.
    fn finish(self: Box<Self>) -> std::io::Result<Hashed<File>>;
}

/// A writer that hashes and counts what passes through it: the bytes as they land on disk,
/// which the manifest and storage verify.
pub struct Hashed<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> Hashed<W> {
    pub fn new(inner: W) -> Hashed<W> {
        Hashed {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn inner(&self) -> &W {
        &self.inner
    }

    /// The SHA-256 of what was written, in hex.
    pub fn sha256(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl Hashed<std::io::Sink> {
    /// The whole file at `path` read through: its SHA-256 and length.
    pub fn of_file(path: &std::path::Path) -> std::io::Result<Hashed<std::io::Sink>> {
        let mut hashed = Hashed::new(std::io::sink());
        std::io::copy(&mut File::open(path)?, &mut hashed)?;
        Ok(hashed)
    }
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_is_known_again_by_its_file_name() {
        for format in [
            FileFormat::Parquet,
            FileFormat::Ndjson(Compression::None),
            FileFormat::Ndjson(Compression::Gzip),
            FileFormat::Ndjson(Compression::Zstd),
        ] {
            let path = format!("exports/t/day=01/batch-1.{}", format.extension());
            assert_eq!(FileFormat::of_path(&path), Some(format));
        }
        assert_eq!(FileFormat::of_path("archive/a.csv"), None);
    }
}
