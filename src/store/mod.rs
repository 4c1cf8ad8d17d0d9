//! The SQLite store: a pooled WAL database, its migrations, and the typed errors of both.

pub mod alerts;
pub mod backup;
mod batch;
pub mod capture;
pub mod export_metrics;
pub mod export_rewrite;
pub mod export_unlisted;
pub mod lock;
pub mod manifest;
mod migrate;
pub mod occurrences;
mod row_json;
pub mod runs;
pub mod siem_ledger;
pub mod site;
pub mod stats;
pub mod times;

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::{FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::config::Durability;

pub use batch::{BatchOutcome, BatchedChange};
pub use migrate::MIGRATIONS;
pub use row_json::row_object;

pub type Pool = r2d2::Pool<SqliteConnectionManager>;
pub type PooledConnection = r2d2::PooledConnection<SqliteConnectionManager>;

/// How long a writer waits for SQLite's write lock before giving up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// A writer waits for the write lock in short steps. What holds it is mostly the application's
/// writer, whose commits leave the lock free for a few milliseconds at a time; SQLite's own
/// back-off (1, 2, 5, 10 ... 100 ms) can miss every such window for the whole busy timeout
/// (a writer holding the lock 60 ms of every 65 starved a run's first write), and kept a purge
/// waiting a quarter of its time (bench/purge).
const RETRY_PAUSE: Duration = Duration::from_micros(250);

fn retry_soon(attempt: i32) -> bool {
    std::thread::sleep(RETRY_PAUSE);
    (attempt.max(0) as u128) < BUSY_TIMEOUT.as_micros() / RETRY_PAUSE.as_micros()
}

/// Makes `conn` wait for the write lock as every pooled connection does: in short steps, for at
/// most `BUSY_TIMEOUT`.
pub fn wait_for_the_write_lock(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(retry_soon))
}
/// The WAL file is truncated back to this size after checkpoints.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("creating {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "store schema version {found} is newer than this binary knows ({known}); upgrade edgecron"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// The store file cannot be opened or written (a read-only directory, no space to create
    /// it): configuration, not a failure of a job.
    #[error("{}: cannot be opened and written: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
}

/// Reads a column holding the name of one of `all` (as `name` spells it), so a value the
/// store holds as text comes back as its enum; unknown text is a conversion error, never a guess.
pub(crate) fn named_value<T: Copy>(
    value: ValueRef<'_>,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> FromSqlResult<T> {
    let text = value.as_str()?;
    all.iter()
        .copied()
        .find(|item| name(*item) == text)
        .ok_or_else(|| FromSqlError::Other(format!("unknown value {text:?}").into()))
}

/// `FromSql` (through [`named_value`]) and `Display` for enums the store keeps by name: each
/// has `ALL` and `as_str`.
macro_rules! stored_by_name {
    ($($kind:ty),+ $(,)?) => {$(
        impl rusqlite::types::FromSql for $kind {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<$kind> {
                crate::store::named_value(value, &<$kind>::ALL, <$kind>::as_str)
            }
        }

        impl std::fmt::Display for $kind {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }
    )+};
}
pub(crate) use stored_by_name;

/// A position in a table's `(created_at, id)` order: the last row a job has handled. Never a
/// bare timestamp, so rows sharing a `created_at` are neither skipped nor repeated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: String,
    pub id: String,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database file and its directory, and checks it can be
    /// written, so an unusable store is reported at once with its path rather than after the
    /// pool's retries. Does not migrate.
    pub fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        check_writable(path, flags, durability).map_err(|error| StoreError::Unusable {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        let manager = SqliteConnectionManager::file(path)
            .with_flags(flags)
            .with_init(move |conn| configure_connection(conn, durability));
        let pool = r2d2::Pool::builder()
            .max_size(16)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            .build(manager)?;
        Ok(Store {
            pool,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn conn(&self) -> Result<PooledConnection, StoreError> {
        Ok(self.pool.get()?)
    }

    /// Applies every migration not yet applied; returns how many were.
    pub fn migrate(&self) -> Result<usize, StoreError> {
        migrate::apply_pending(&mut *self.conn()?)
    }

    /// Answers whether the store can run a query: the health check.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Opens one connection as the pool would and takes the write lock for a moment: fails at once
/// on a read-only directory or file, or no space to create the store. A store another process
/// is writing (busy) is writable.
fn check_writable(path: &Path, flags: OpenFlags, durability: Durability) -> rusqlite::Result<()> {
    let mut conn = Connection::open_with_flags(path, flags)?;
    configure_connection(&mut conn, durability)?;
    conn.busy_timeout(Duration::ZERO)?;
    match conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;") {
        Err(rusqlite::Error::SqliteFailure(failure, _))
            if failure.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Ok(())
        }
        other => other,
    }
}

fn configure_connection(conn: &mut Connection, durability: Durability) -> rusqlite::Result<()> {
    wait_for_the_write_lock(conn)?;
    // WAL lets the application's readers and writers go on while a job reads. NORMAL is
    // durable across process crashes in WAL mode; FULL also across power cuts: each commit's
    // WAL frames are synced before the commit returns, so edgecron never acts on a commit of
    // its own state (a manifest, the capture rows taken, an upload mark) that a power cut could
    // roll back. The application's connections keep their own setting.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES)?;
    // Statement journals (every batched DELETE ... WHERE rowid IN (...) writes one) stay in
    // memory rather than going to a temporary file: about 15% off each purge batch.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    times::register(conn)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Store;
    use crate::config::Durability;

    /// A migrated store on a temporary file (pooled `:memory:` connections would each see
    /// their own empty database).
    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Store::open(&dir.path().join("edgecron.db"), Durability::Full).expect("open store");
        store.migrate().expect("migrate");
        (dir, store)
    }
}

#[cfg(test)]
mod durability_tests {
    use super::Store;
    use crate::config::Durability;

    #[test]
    fn edgecron_s_connections_commit_as_durability_says() {
        for (durability, expected) in [(Durability::Full, 2), (Durability::Normal, 1)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("edgecron.db"), durability).unwrap();
            let synchronous: i64 = store
                .conn()
                .unwrap()
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            assert_eq!(synchronous, expected, "{durability:?}");
        }
    }
}
