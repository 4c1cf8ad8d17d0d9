//! The export's reader: the rows of a reserved walk step (a first run's pass over the table)
//! and then the captured rows in commit order, copied into chunks for the writers, with what
//! became of each captured row so the commit can delete exactly the ones taken.
//!
//! Both sources are read in one pass on one connection; rows of all tenants come interleaved
//! as the table stores them, so each page is read into SQLite's cache once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::{ControlFlow, Range};
use std::sync::mpsc::SyncSender;

use rusqlite::types::{Value, ValueRef};

use super::ExportError;
use crate::clock::{canonical_time, from_store_value, to_store_text};
use crate::export::row::Row;
use crate::store::Store;
use crate::store::capture::{self, Source, WalkProgress, WalkStep};
use crate::store::manifest;

/// Rows a chunk holds at most; a chunk also closes once its text passes [`CHUNK_BYTES`], so
/// memory is bounded by bytes whatever the payload sizes (a row larger than that goes alone).
const CHUNK_ROWS: usize = 1024;
const CHUNK_BYTES: usize = 4 << 20;
/// Invalid rows listed per tenant in a result; the rest are counted.
const INVALID_LISTED: usize = 100;
/// Walk rows deferred to the capture in one run at most (they are held until the commit).
const DEFERRED_LIMIT: usize = 100_000;

/// A row's columns in a chunk's text: id, customer_id, channel, outcome, payload and the
/// canonical created_at.
pub type Ranges = [Range<usize>; 6];

/// Where a row came from, which names its file deterministically: the walk (by id alone) or
/// the capture queue (by `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Walk,
    Captured(i64),
}

/// One row in a chunk.
pub struct ChunkRow {
    pub slot: usize,
    pub origin: Origin,
    pub ranges: Ranges,
}

/// Rows copied out of SQLite for one writer, as bytes: the reader checks only what decides a
/// row's fate (the id is text, `created_at` names an instant) and leaves decoding the other
/// columns to the writers, so the work is shared across the cores.
pub struct Chunk {
    bytes: Vec<u8>,
    pub rows: Vec<ChunkRow>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            bytes: Vec::new(),
            rows: Vec::with_capacity(CHUNK_ROWS),
        }
    }

    fn is_full(&self) -> bool {
        self.rows.len() >= CHUNK_ROWS || self.bytes.len() >= CHUNK_BYTES
    }

    /// The rows in the order a writer writes them: by tenant slot and UTC day, each day's rows
    /// in the order they came (commit order). A writer keeps a bounded number of files open,
    /// so rows of one day written together make one file per day, not one per row.
    pub fn write_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        order.sort_by_key(|&index| {
            let row = &self.rows[index];
            let created_at = &self.bytes[row.ranges[5].clone()];
            (row.slot, &created_at[..created_at.len().min(10)])
        });
        order
    }

    /// The row's columns as text; bytes that are not UTF-8 are replaced (only the id and
    /// `created_at` decide anything, and those were checked).
    pub fn columns(&self, row: &ChunkRow) -> [Cow<'_, str>; 6] {
        row.ranges.clone().map(|range| {
            let bytes = &self.bytes[range];
            match std::str::from_utf8(bytes) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(bytes),
            }
        })
    }
}

/// A row of a chunk, from its decoded columns.
pub fn row<'a>(columns: &'a [Cow<'a, str>; 6], tenant_id: &'a str) -> Row<'a> {
    Row {
        id: &columns[0],
        tenant_id,
        customer_id: &columns[1],
        channel: &columns[2],
        outcome: &columns[3],
        payload: &columns[4],
        created_at: &columns[5],
    }
}

/// A row that cannot be exported as it is, as the result reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvalidRow {
    pub id: String,
    pub reason: String,
}

/// What became of a captured row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Sent to the writers for this tenant slot: taken if that tenant commits.
    Sent(usize),
    /// Its interaction row no longer exists (purged or deleted before export): taken.
    Gone,
    /// Left in the capture for a later run (inactive tenant, batch full, invalid).
    Kept,
}

/// What the reader did.
#[derive(Default)]
pub struct ReadOutcome {
    /// How far the walk step got, when there was one, and the part of it the reader went
    /// through (the whole step as it grew, or up to where it stopped).
    pub walk: Option<WalkProgress>,
    pub walked: Option<WalkStep>,
    /// The rest of the step, when the walk stopped part-way.
    pub unwalked: Option<WalkStep>,
    /// Walk rows not sent to a writer (an inactive tenant's, one past its tenant's batch, one
    /// that cannot be exported as it is), as `(slot or usize::MAX, tenant_id, id)`: captured
    /// at the commit, so they wait in the queue.
    pub deferred: Vec<(usize, Value, Value)>,
    /// Every captured row read, in `seq` order.
    pub captured: Vec<(i64, Fate)>,
    /// Per slot: rows sent, invalid rows listed (at most [`INVALID_LISTED`]) and counted.
    pub sent: Vec<u64>,
    pub invalid: Vec<Vec<InvalidRow>>,
    pub invalid_count: Vec<u64>,
}

/// What the reader is given.
pub struct Reading<'a> {
    pub store: &'a Store,
    /// Exportable tenants by id, to their slot.
    pub slots: &'a HashMap<&'a str, usize>,
    pub batch_size: usize,
    pub walk: Option<&'a WalkStep>,
    /// The most walk rows one run reads, whatever their tenants.
    pub walk_budget: usize,
}

/// Reads the walk step and the capture, sending chunks to the writers (`slot % writers`).
pub fn read(
    reading: &Reading<'_>,
    senders: &[SyncSender<Chunk>],
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Result<ReadOutcome, ExportError> {
    let slot_count = reading.slots.len();
    let mut outcome = ReadOutcome {
        sent: vec![0; slot_count],
        invalid: vec![Vec::new(); slot_count],
        invalid_count: vec![0; slot_count],
        ..ReadOutcome::default()
    };
    let mut pending: Vec<Chunk> = senders.iter().map(|_| Chunk::new()).collect();
    let conn = reading.store.conn()?;
    let mut stopped = false;
    if let Some(first) = reading.walk {
        stopped = walk(
            reading,
            &conn,
            first,
            senders,
            &mut pending,
            &mut outcome,
            should_stop,
        )?;
    }
    if !stopped {
        read_captured(
            reading,
            &conn,
            senders,
            &mut pending,
            &mut outcome,
            should_stop,
        )?;
    }
    for (writer, chunk) in pending.into_iter().enumerate() {
        if !chunk.rows.is_empty() {
            senders[writer]
                .send(chunk)
                .map_err(|_| ExportError::Stage("writer"))?;
        }
    }
    Ok(outcome)
}

/// Reads the walk step, reserving the walk on piece by piece while tenants have room and the
/// run's walk budget lasts; answers whether the run is to stop (shutdown or the deadline).
fn walk(
    reading: &Reading<'_>,
    conn: &rusqlite::Connection,
    first: &WalkStep,
    senders: &[SyncSender<Chunk>],
    pending: &mut [Chunk],
    outcome: &mut ReadOutcome,
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Result<bool, ExportError> {
    let mut covered = first.clone();
    let mut piece = first.clone();
    let mut walked = 0usize;
    loop {
        let flow = manifest::walk_rows(conn, &piece, |row| -> Result<_, ExportError> {
            walked += 1;
            let id = row.get_ref(1)?;
            let slot = slot_of(reading, row.get_ref(0)?);
            match slot.filter(|&slot| outcome.room(slot, reading.batch_size)) {
                Some(slot) => {
                    let writer = slot % senders.len();
                    match copy_row(&mut pending[writer], row, 1, slot, Origin::Walk) {
                        Ok(()) => outcome.sent[slot] += 1,
                        Err(reason) => {
                            outcome.note_invalid(slot, id, reason);
                            outcome.deferred.push((slot, row.get(0)?, row.get(1)?));
                        }
                    }
                    send_if_full(pending, senders, writer)?;
                }
                // An inactive tenant's row, or one past its tenant's batch: captured at the
                // commit, so it waits in the queue.
                None => {
                    outcome
                        .deferred
                        .push((slot.unwrap_or(usize::MAX), row.get(0)?, row.get(1)?))
                }
            }
            let check =
                walked.is_multiple_of(CHUNK_ROWS) || outcome.deferred.len() >= DEFERRED_LIMIT;
            if check {
                let stop = should_stop();
                if stop || outcome.all_full(reading) || outcome.deferred.len() >= DEFERRED_LIMIT {
                    outcome.walk = Some(WalkProgress::StoppedAfter(row.get(1)?));
                    outcome.unwalked = Some(WalkStep {
                        from: Some(row.get(1)?),
                        ..covered.clone()
                    });
                    outcome.walked = Some(WalkStep {
                        to: Some(row.get(1)?),
                        ..covered.clone()
                    });
                    return Ok(ControlFlow::Break(stop));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if let ControlFlow::Break(stop) = flow {
            return Ok(stop);
        }
        let budget = reading.walk_budget.saturating_sub(walked);
        let next = if budget == 0 || outcome.all_full(reading) {
            None
        } else {
            capture::extend_walk(
                reading.store,
                Source::Interactions,
                "export",
                &covered,
                budget,
            )?
        };
        let Some(next) = next else {
            outcome.walk = Some(WalkProgress::Done);
            outcome.walked = Some(covered);
            return Ok(false);
        };
        covered.to = next.to.clone();
        piece = next;
    }
}

fn read_captured(
    reading: &Reading<'_>,
    conn: &rusqlite::Connection,
    senders: &[SyncSender<Chunk>],
    pending: &mut [Chunk],
    outcome: &mut ReadOutcome,
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Result<(), ExportError> {
    let mut full_slots = (0..outcome.sent.len())
        .filter(|&slot| !outcome.room(slot, reading.batch_size))
        .count();
    // A walk stopped part-way: what the triggers caught in the rest of its step waits for it.
    let unwalked = outcome.unwalked.clone();
    manifest::captured_rows(conn, unwalked.as_ref(), |row| -> Result<_, ExportError> {
        if full_slots == reading.slots.len() {
            return Ok(ControlFlow::Break(()));
        }
        if outcome.captured.len().is_multiple_of(CHUNK_ROWS) && should_stop() {
            return Ok(ControlFlow::Break(()));
        }
        let seq: i64 = row.get(0)?;
        let id = row.get_ref(2)?;
        let (superseded, held_for_walk): (bool, bool) = (row.get(8)?, row.get(9)?);
        if held_for_walk {
            outcome.captured.push((seq, Fate::Kept));
            return Ok(ControlFlow::Continue(()));
        }
        // Gone from the table, or captured again later (that entry exports the row as it is).
        if id == ValueRef::Null || superseded {
            outcome.captured.push((seq, Fate::Gone));
            return Ok(ControlFlow::Continue(()));
        }
        let slot = slot_of(reading, row.get_ref(1)?)
            .filter(|&slot| outcome.room(slot, reading.batch_size));
        let Some(slot) = slot else {
            outcome.captured.push((seq, Fate::Kept));
            return Ok(ControlFlow::Continue(()));
        };
        let writer = slot % senders.len();
        match copy_row(&mut pending[writer], row, 2, slot, Origin::Captured(seq)) {
            Ok(()) => {
                outcome.captured.push((seq, Fate::Sent(slot)));
                outcome.sent[slot] += 1;
                if !outcome.room(slot, reading.batch_size) {
                    full_slots += 1;
                }
            }
            Err(reason) => {
                outcome.note_invalid(slot, id, reason);
                outcome.captured.push((seq, Fate::Kept));
            }
        }
        send_if_full(pending, senders, writer)?;
        Ok(ControlFlow::Continue(()))
    })
}

impl ReadOutcome {
    fn room(&self, slot: usize, batch_size: usize) -> bool {
        (self.sent[slot] as usize) < batch_size
    }

    fn all_full(&self, reading: &Reading<'_>) -> bool {
        (0..self.sent.len()).all(|slot| !self.room(slot, reading.batch_size))
    }

    fn note_invalid(&mut self, slot: usize, id: ValueRef<'_>, reason: Unexportable) {
        self.invalid_count[slot] += 1;
        if self.invalid[slot].len() < INVALID_LISTED {
            self.invalid[slot].push(InvalidRow {
                id: printable_id(id),
                reason: reason.to_string(),
            });
        }
    }
}

fn slot_of(reading: &Reading<'_>, tenant: ValueRef<'_>) -> Option<usize> {
    let ValueRef::Text(bytes) = tenant else {
        return None;
    };
    let tenant = std::str::from_utf8(bytes).ok()?;
    reading.slots.get(tenant).copied()
}

fn send_if_full(
    pending: &mut [Chunk],
    senders: &[SyncSender<Chunk>],
    writer: usize,
) -> Result<(), ExportError> {
    if !pending[writer].is_full() {
        return Ok(());
    }
    let chunk = std::mem::replace(&mut pending[writer], Chunk::new());
    senders[writer]
        .send(chunk)
        .map_err(|_| ExportError::Stage("writer"))
}

/// Why a row cannot be exported as it is; listed in the run's `invalid`, the row kept.
#[derive(Debug, thiserror::Error)]
enum Unexportable {
    #[error("id is not UTF-8 text")]
    IdNotUtf8,
    #[error("id is {0}, not text")]
    IdNotText(&'static str),
    #[error("created_at is not UTF-8 text")]
    TimeNotUtf8,
    #[error("created_at {0:?} names no instant")]
    NoInstant(String),
    #[error("created_at is {0}, not a time")]
    TimeNotText(&'static str),
    #[error(transparent)]
    Column(#[from] rusqlite::Error),
}

/// Copies the row's id, customer_id, channel, outcome, payload and canonical created_at
/// (columns `first..first + 6`) into the chunk; refuses a row that cannot be exported as it
/// is, saying why, and leaves the chunk as it was.
fn copy_row(
    chunk: &mut Chunk,
    row: &rusqlite::Row<'_>,
    first: usize,
    slot: usize,
    origin: Origin,
) -> Result<(), Unexportable> {
    let id = text_id(row.get_ref(first)?)?;
    // Read as every job reads a time (`clock`); an instant outside years 0001-9999 names no
    // partition day, so it is this row's problem, never its tenant's.
    let created_at = match row.get_ref(first + 5)? {
        ValueRef::Text(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| Unexportable::TimeNotUtf8)?;
            canonical_time(text).ok_or_else(|| Unexportable::NoInstant(text.to_string()))?
        }
        number @ (ValueRef::Real(_) | ValueRef::Integer(_)) => from_store_value(number)
            .map(|time| Cow::Owned(to_store_text(time)))
            .ok_or_else(|| Unexportable::NoInstant(printable_id(number)))?,
        other => return Err(Unexportable::TimeNotText(type_name(other))),
    };
    let mut ranges: Ranges = Default::default();
    ranges[0] = append(&mut chunk.bytes, |bytes| {
        bytes.extend_from_slice(id.as_bytes())
    });
    for (index, column) in (1..5).zip(first + 1..) {
        let value = row.get_ref(column)?;
        ranges[index] = append(&mut chunk.bytes, |bytes| {
            push_value(bytes, value, index == 4)
        });
    }
    ranges[5] = append(&mut chunk.bytes, |bytes| {
        bytes.extend_from_slice(created_at.as_bytes())
    });
    chunk.rows.push(ChunkRow {
        slot,
        origin,
        ranges,
    });
    Ok(())
}

/// Appends what `write` writes, answering where it went.
fn append(bytes: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
    let start = bytes.len();
    write(bytes);
    start..bytes.len()
}

/// An id as text; a BLOB or bytes that are not UTF-8 cannot name a row in an export file.
fn text_id(value: ValueRef<'_>) -> Result<&str, Unexportable> {
    match value {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).map_err(|_| Unexportable::IdNotUtf8),
        other => Err(Unexportable::IdNotText(type_name(other))),
    }
}

fn type_name(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a BLOB",
    }
}

/// An id as a person can read it in a result: text as it is, other values as SQLite writes
/// them (`x'…'` for a BLOB).
fn printable_id(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        ValueRef::Blob(bytes) => {
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("x'{hex}'")
        }
        ValueRef::Integer(number) => number.to_string(),
        ValueRef::Real(number) => number.to_string(),
        ValueRef::Null => "NULL".to_string(),
    }
}

/// Copies a column's bytes. The application may have stored numbers, blobs or NULLs; a NULL
/// payload becomes JSON `null`, other NULLs empty strings.
fn push_value(out: &mut Vec<u8>, value: ValueRef<'_>, is_payload: bool) {
    match value {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => out.extend_from_slice(bytes),
        ValueRef::Integer(number) => out.extend_from_slice(number.to_string().as_bytes()),
        ValueRef::Real(number) => out.extend_from_slice(number.to_string().as_bytes()),
        ValueRef::Null if is_payload => out.extend_from_slice(b"null"),
        ValueRef::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_are_not_text_are_named_in_sqlite_s_own_form() {
        assert_eq!(printable_id(ValueRef::Blob(&[0xde, 0xad])), "x'dead'");
        assert_eq!(
            text_id(ValueRef::Text(&[0xff, 0x41]))
                .unwrap_err()
                .to_string(),
            "id is not UTF-8 text"
        );
        assert_eq!(
            text_id(ValueRef::Blob(b"abc")).unwrap_err().to_string(),
            "id is a BLOB, not text"
        );
        assert_eq!(text_id(ValueRef::Text(b"ok")).unwrap(), "ok");
    }
}
