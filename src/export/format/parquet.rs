//! Parquet export files: typed columns (`created_at` a UTC timestamp in milliseconds,
//! `payload` JSON text), zstd column chunks, statistics for pruning, written with the
//! `parquet` crate's synchronous writer (no arrow, no async runtime).
//!
//! Rows are held column by column and written as a row group when the writer's memory budget
//! asks for it (the largest open file goes first) or at `ROW_GROUP_MAX_BYTES`, so memory stays
//! bounded whatever the payloads; the footer is written when the file is finished.

use std::fs::File;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::record::RowAccessor;
use parquet::record::reader::RowIter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::{ColumnPath, Type};

use super::ndjson::{append_line, embeddable};
use super::{Encoder, Filtered, Hashed, Ids, Pushed, Subject};
use crate::export::row::{Row, instant_millis};

/// The interaction table as Parquet sees it, in the order its columns are written.
const SCHEMA: &str = "
message interaction_history {
    required binary id (STRING);
    required binary tenant_id (STRING);
    required binary customer_id (STRING);
    required binary channel (STRING);
    required binary outcome (STRING);
    required binary payload (STRING);
    required int64 created_at (TIMESTAMP(MILLIS,true));
}";
/// A file's rows are written as a row group at the latest once this much is held.
const ROW_GROUP_MAX_BYTES: usize = 32 * 1024 * 1024;
/// zstd's level for column chunks.
const ZSTD_LEVEL: i32 = 3;
/// Longest min/max kept in statistics: enough to prune by id or time, never a whole payload.
const STATISTICS_TRUNCATE_BYTES: usize = 64;

fn schema() -> Result<Arc<Type>, ParquetError> {
    static SCHEMA_TYPE: OnceLock<Arc<Type>> = OnceLock::new();
    if let Some(schema) = SCHEMA_TYPE.get() {
        return Ok(Arc::clone(schema));
    }
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    Ok(Arc::clone(SCHEMA_TYPE.get_or_init(|| schema)))
}

fn properties() -> Result<Arc<WriterProperties>, ParquetError> {
    let column = |name: &str| ColumnPath::from(name);
    Ok(Arc::new(
        WriterProperties::builder()
            .set_created_by(concat!("edgecron ", env!("CARGO_PKG_VERSION")).into())
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
            // Tenant, customer, channel and outcome repeat: dictionaries pay. Ids and times
            // are unique and near-sorted: delta encodings pay. Payloads are left to zstd.
            .set_dictionary_enabled(true)
            .set_column_dictionary_enabled(column("id"), false)
            .set_column_encoding(column("id"), Encoding::DELTA_BYTE_ARRAY)
            .set_column_dictionary_enabled(column("created_at"), false)
            .set_column_encoding(column("created_at"), Encoding::DELTA_BINARY_PACKED)
            .set_column_dictionary_enabled(column("payload"), false)
            .set_column_statistics_enabled(column("payload"), EnabledStatistics::None)
            .set_statistics_truncate_length(Some(STATISTICS_TRUNCATE_BYTES))
            // Min and max per column chunk prune row groups; per page they cost more than
            // they save in files of a few thousand rows.
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .build(),
    ))
}

/// One text column's values held back to back, so a row costs no allocation of its own; they
/// become `ByteArray`s (slices of one buffer, not copies) when the row group is written.
#[derive(Default)]
struct TextColumn {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl TextColumn {
    fn push(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
        self.ends.push(self.bytes.len());
    }

    fn values(self) -> Vec<ByteArray> {
        let bytes = Bytes::from(self.bytes);
        let mut start = 0;
        self.ends
            .into_iter()
            .map(|end| {
                let value = ByteArray::from(bytes.slice(start..end));
                start = end;
                value
            })
            .collect()
    }
}

/// Rows held column by column until they are written as a row group.
#[derive(Default)]
struct Columns {
    text: [TextColumn; 6],
    created_at: Vec<i64>,
    bytes: usize,
}

pub struct ParquetEncoder {
    writer: SerializedFileWriter<Hashed<File>>,
    held: Columns,
}

impl ParquetEncoder {
    pub fn new(file: Hashed<File>) -> std::io::Result<ParquetEncoder> {
        let writer =
            SerializedFileWriter::new(file, schema().map_err(io)?, properties().map_err(io)?)
                .map_err(io)?;
        Ok(ParquetEncoder {
            writer,
            held: Columns::default(),
        })
    }

    fn write_row_group(&mut self) -> Result<(), ParquetError> {
        if self.held.created_at.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        let mut group = self.writer.next_row_group()?;
        let mut text = held.text.into_iter();
        while let Some(mut column) = group.next_column()? {
            match text.next() {
                Some(values) => {
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&values.values(), None, None)?;
                }
                None => {
                    column
                        .typed::<Int64Type>()
                        .write_batch(&held.created_at, None, None)?;
                }
            }
            column.close()?;
        }
        group.close()?;
        Ok(())
    }
}

impl Encoder for ParquetEncoder {
    fn push(&mut self, row: &Row<'_>) -> std::io::Result<Pushed> {
        let created_at = instant_millis(row.created_at).ok_or_else(|| {
            std::io::Error::other(format!(
                "row {}: created_at {:?} is not a canonical time",
                row.id, row.created_at
            ))
        })?;
        // The column is JSON text: a payload readers would not take as JSON is kept as a JSON
        // string, as the NDJSON line keeps it.
        let payload_kept_as_string = !embeddable(row.payload);
        let quoted;
        let payload = if payload_kept_as_string {
            quoted = serde_json::Value::from(row.payload).to_string();
            quoted.as_str()
        } else {
            row.payload.trim()
        };
        let values = [
            row.id,
            row.tenant_id,
            row.customer_id,
            row.channel,
            row.outcome,
            payload,
        ];
        let raw_bytes = values.iter().map(|value| value.len()).sum::<usize>() + 8;
        for (column, value) in self.held.text.iter_mut().zip(values) {
            column.push(value.as_bytes());
        }
        self.held.created_at.push(created_at);
        // Each text value also keeps where it ends.
        self.held.bytes += raw_bytes + 6 * std::mem::size_of::<usize>();
        if self.held.bytes >= ROW_GROUP_MAX_BYTES {
            self.flush()?;
        }
        Ok(Pushed {
            raw_bytes: raw_bytes as u64,
            payload_kept_as_string,
        })
    }

    fn buffered(&self) -> usize {
        self.held.bytes
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_row_group().map_err(io)
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<Hashed<File>> {
        self.write_row_group().map_err(io)?;
        self.writer.into_inner().map_err(io)
    }
}

/// The `id` of each row of a Parquet file, read column-wise (the rest is never decoded).
pub fn ids(file: File) -> std::io::Result<Ids> {
    let reader = SerializedFileReader::new(file).map_err(io)?;
    let projection =
        parse_message_type("message interaction_history { required binary id (STRING); }")
            .map_err(io)?;
    let rows = RowIter::from_file_into(Box::new(reader))
        .project(Some(projection))
        .map_err(io)?;
    Ok(Box::new(rows.map(|row| {
        let row = row.map_err(io)?;
        row.get_string(0).cloned().map_err(io)
    })))
}

/// A Parquet row's values, owned, as a [`Row`] borrows them.
struct OwnedRow {
    text: [String; 6],
    created_at: String,
}

impl OwnedRow {
    fn row(&self) -> Row<'_> {
        let [id, tenant_id, customer_id, channel, outcome, payload] = &self.text;
        Row {
            id,
            tenant_id,
            customer_id,
            channel,
            outcome,
            payload,
            created_at: &self.created_at,
        }
    }
}

/// Every row of a Parquet export file, in file order.
fn rows(source: File) -> std::io::Result<impl Iterator<Item = std::io::Result<OwnedRow>>> {
    let reader = SerializedFileReader::new(source).map_err(io)?;
    let rows = RowIter::from_file_into(Box::new(reader));
    Ok(rows.map(|row| {
        let row = row.map_err(io)?;
        let text = |index: usize| row.get_string(index).cloned().map_err(io);
        let millis = row.get_timestamp_millis(6).map_err(io)?;
        let created_at = chrono::DateTime::from_timestamp_millis(millis)
            .ok_or_else(|| std::io::Error::other(format!("created_at {millis} is no instant")))?
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Ok(OwnedRow {
            text: [text(0)?, text(1)?, text(2)?, text(3)?, text(4)?, text(5)?],
            created_at,
        })
    }))
}

/// `source`'s rows into a new Parquet file `out`, leaving out `subject`'s.
pub fn without(source: File, out: Hashed<File>, subject: Subject<'_>) -> std::io::Result<Filtered> {
    let mut encoder = Box::new(ParquetEncoder::new(out)?);
    let (mut kept, mut left_out) = (0, 0);
    for row in rows(source)? {
        let row = row?;
        let row = row.row();
        if subject.owns(row.tenant_id, row.customer_id) {
            left_out += 1;
            continue;
        }
        encoder.push(&row)?;
        kept += 1;
    }
    Ok(Filtered {
        file: encoder.finish()?,
        kept,
        left_out,
    })
}

/// `subject`'s rows of `source`, each as the object its NDJSON line is.
pub fn rows_of(source: File, subject: Subject<'_>) -> std::io::Result<Vec<serde_json::Value>> {
    let mut found = Vec::new();
    for row in rows(source)? {
        let row = row?;
        let row = row.row();
        if !subject.owns(row.tenant_id, row.customer_id) {
            continue;
        }
        let mut line = Vec::new();
        append_line(&mut line, &row);
        found.push(serde_json::from_slice(&line).map_err(std::io::Error::other)?);
    }
    Ok(found)
}

fn io(error: ParquetError) -> std::io::Error {
    std::io::Error::other(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::format::FileFormat;

    fn row<'a>(id: &'a str, payload: &'a str) -> Row<'a> {
        Row {
            id,
            tenant_id: "acme",
            customer_id: "c-1",
            channel: "email",
            outcome: "opened",
            payload,
            created_at: "2026-03-30T02:00:00.123Z",
        }
    }

    #[test]
    fn rows_written_in_several_row_groups_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.parquet");
        let file = Hashed::new(File::create(&path).unwrap());
        let mut encoder = FileFormat::Parquet.encoder(file).unwrap();
        let ids: Vec<String> = (0..50).map(|n| format!("ih-{n:03}")).collect();
        for (n, id) in ids.iter().enumerate() {
            let pushed = encoder.push(&row(id, r#"{"k": 1}"#)).unwrap();
            assert!(!pushed.payload_kept_as_string);
            if n % 20 == 19 {
                encoder.flush().unwrap();
                assert_eq!(encoder.buffered(), 0);
            }
        }
        let kept = encoder.push(&row("ih-not-json", "{broken")).unwrap();
        assert!(kept.payload_kept_as_string);
        let written = encoder.finish().unwrap();
        assert_eq!(written.written(), std::fs::metadata(&path).unwrap().len());
        let read: Vec<String> = FileFormat::Parquet
            .ids(File::open(&path).unwrap())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read.len(), 51);
        assert_eq!(read[..50], ids[..]);
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        use parquet::file::reader::FileReader;
        assert_eq!(reader.metadata().num_row_groups(), 3);
    }

    #[test]
    fn a_time_that_is_not_canonical_is_refused_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        let file = Hashed::new(File::create(dir.path().join("b.parquet")).unwrap());
        let mut encoder = FileFormat::Parquet.encoder(file).unwrap();
        let mut odd = row("ih-1", "{}");
        odd.created_at = "2026-03-30 02:00:00";
        assert!(encoder.push(&odd).is_err());
    }
}
