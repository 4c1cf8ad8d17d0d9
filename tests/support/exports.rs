//! What the export job leaves on disk: its files, the rows in them, running it until it has
//! nothing left, and the exactly-once check of those files against the store.

use std::path::{Path, PathBuf};

use super::Env;

/// One row as found in an export file on disk.
#[derive(Debug, Clone)]
pub struct ExportedRow {
    pub file: PathBuf,
    pub id: String,
    pub tenant_id: String,
    pub created_at: String,
}

/// Every file under `exports/` (relative paths), temporary ones included.
pub fn export_files(env: &Env) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let mut files = Vec::new();
    walk(&env.data_dir().join("exports"), env.data_dir(), &mut files);
    files.sort();
    files
}

/// Reads every row of every export file, in the format its name says: each NDJSON line one
/// JSON object (plain, gzip or zstd), or a Parquet file's rows.
pub fn exported_rows(env: &Env) -> Vec<ExportedRow> {
    let mut rows = Vec::new();
    for file in export_files(env) {
        let path = env.data_dir().join(&file);
        let name = file.to_string_lossy().into_owned();
        if name.ends_with(".parquet") {
            rows.extend(
                parquet_rows(&path)
                    .into_iter()
                    .map(|(id, tenant_id, created_at)| ExportedRow {
                        file: file.clone(),
                        id,
                        tenant_id,
                        created_at,
                    }),
            );
            continue;
        }
        let bytes = std::fs::read(&path).expect("read export file");
        let mut text = String::new();
        let decoded = if name.ends_with(".gz") {
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
        } else if name.ends_with(".zst") {
            zstd::stream::read::Decoder::new(&bytes[..])
                .and_then(|mut decoder| std::io::Read::read_to_string(&mut decoder, &mut text))
        } else {
            std::io::Read::read_to_string(&mut &bytes[..], &mut text)
        };
        decoded.unwrap_or_else(|error| panic!("{file:?} cannot be decoded: {error}"));
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{file:?} does not end with a newline"
        );
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{file:?}: {error}: {line}"));
            rows.push(ExportedRow {
                file: file.clone(),
                id: value["id"].as_str().expect("id").to_string(),
                tenant_id: value["tenant_id"].as_str().expect("tenant_id").to_string(),
                created_at: value["created_at"]
                    .as_str()
                    .expect("created_at")
                    .to_string(),
            });
        }
    }
    rows
}

/// `(id, tenant_id, created_at)` of each row of a Parquet export file, the time as the store's
/// canonical text.
fn parquet_rows(path: &Path) -> Vec<(String, String, String)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let file = std::fs::File::open(path).expect("open a Parquet export file");
    let reader = SerializedFileReader::new(file)
        .unwrap_or_else(|error| panic!("{path:?} is not Parquet: {error}"));
    reader
        .get_row_iter(None)
        .expect("rows")
        .map(|row| {
            let row = row.expect("a row");
            let millis = row.get_timestamp_millis(6).expect("created_at");
            let created_at = chrono::DateTime::from_timestamp_millis(millis)
                .expect("an instant")
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            (
                row.get_string(0).expect("id").clone(),
                row.get_string(1).expect("tenant_id").clone(),
                created_at,
            )
        })
        .collect()
}

/// Runs the export until no tenant has rows left (and its first walk over the table is
/// done); returns how many runs it took.
pub fn drain_exports(env: &Env) -> usize {
    for runs in 1..=10_000 {
        let output = env.run(&["run", "export-interactions"]);
        let result: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("export result");
        if result["totalExported"] == 0 && result["walking"] == false {
            return runs;
        }
    }
    panic!("the export never drained");
}

/// Asserts every row of the active tenants with a text id and a `created_at` naming an
/// instant (as SQLite reads it: any of its time forms or a Julian day number, but no date it
/// would roll over, `2026-02-30`) is in exactly one export file, in the partition of its own
/// UTC day, with its canonical `created_at`; that no other row is exported (one naming no
/// instant stays queued, reported invalid); and that no other file lies under `exports/`.
pub fn assert_exported_exactly_once(env: &Env) {
    let conn = env.db();
    let mut statement = conn
        .prepare(
            "SELECT h.id, h.tenant_id, strftime('%Y-%m-%dT%H:%M:%fZ', h.created_at)
             FROM interaction_history h
             JOIN tenants t ON t.id = h.tenant_id WHERE t.active = 1 AND typeof(h.id) = 'text'
               AND NOT (typeof(h.created_at) = 'text' AND substr(h.created_at, 5, 1) = '-'
                        AND date(substr(h.created_at, 1, 10)) IS NOT substr(h.created_at, 1, 10))
             ORDER BY h.id",
        )
        .unwrap();
    let rows: Vec<(String, String, Option<String>)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (expected, unreadable): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|(_, _, instant)| instant.is_some());
    let expected: Vec<(String, String, String)> = expected
        .into_iter()
        .map(|(id, tenant, instant)| (id, tenant, instant.unwrap_or_default()))
        .collect();
    let mut found = exported_rows(env);
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let duplicates: Vec<String> = found
        .windows(2)
        .filter(|pair| pair[0].id == pair[1].id)
        .map(|pair| {
            format!(
                "{} in {} and {}",
                pair[0].id,
                pair[0].file.display(),
                pair[1].file.display()
            )
        })
        .collect();
    assert!(
        duplicates.is_empty(),
        "rows exported twice: {:?}",
        &duplicates[..duplicates.len().min(6)]
    );
    let exported_unreadable: Vec<&str> = unreadable
        .iter()
        .map(|(id, _, _)| id.as_str())
        .filter(|id| found.iter().any(|row| row.id == *id))
        .collect();
    assert!(
        exported_unreadable.is_empty(),
        "rows whose created_at names no instant were exported: {exported_unreadable:?}"
    );
    let found_ids: Vec<&str> = found.iter().map(|row| row.id.as_str()).collect();
    let expected_ids: Vec<&str> = expected.iter().map(|row| row.0.as_str()).collect();
    assert_eq!(
        found_ids.len(),
        expected_ids.len(),
        "exported {} rows, the store has {}",
        found_ids.len(),
        expected_ids.len()
    );
    assert_eq!(found_ids, expected_ids);
    for (row, (_, _, read_by_sqlite)) in found.iter().zip(&expected) {
        // SQLite rounds sub-millisecond digits (`.2009` reads `.201`); the canonical form
        // truncates them (`.200`), so the two agree within a millisecond.
        let instant = |text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap_or_else(|error| panic!("{}: {text:?}: {error}", row.id))
        };
        let apart = instant(&row.created_at) - instant(read_by_sqlite);
        assert!(
            apart.num_milliseconds().abs() <= 1,
            "{}: exported {}, SQLite reads {read_by_sqlite}",
            row.id,
            row.created_at
        );
        assert!(
            row.created_at.len() == 24 && row.created_at.ends_with('Z'),
            "{}: {}",
            row.id,
            row.created_at
        );
        let day = &row.created_at[..10];
        let partition = format!(
            "year={}/month={}/day={}/",
            &day[..4],
            &day[5..7],
            &day[8..10]
        );
        let file = row.file.to_string_lossy();
        let in_table = file
            .strip_prefix(&format!("exports/{}/interaction_history/", row.tenant_id))
            .unwrap_or_else(|| panic!("{} is in {file}", row.id));
        // A site's partition, or the layout of files written before sites were partitions.
        let in_site = match in_table.strip_prefix("site=") {
            Some(site) => site.split_once('/').map_or("", |(_, rest)| rest),
            None => in_table,
        };
        assert!(in_site.starts_with(&partition), "{} is in {file}", row.id);
    }
    let manifest: i64 = env.query_i64("SELECT COUNT(*) FROM export_files");
    let on_disk = export_files(env);
    assert_eq!(
        on_disk.len() as i64,
        manifest,
        "files on disk and in the manifest differ: {on_disk:?}"
    );
    assert!(
        on_disk.iter().all(|file| {
            let name = file.to_string_lossy();
            [".json", ".json.gz", ".json.zst", ".parquet"]
                .iter()
                .any(|extension| name.ends_with(extension))
        }),
        "stray files: {on_disk:?}"
    );
}
