//! `dsar-erase` (SPEC section 8): one data subject, customer C of tenant T, removed from
//! everywhere edgecron holds them. Not scheduled: `edgecron erase` and `POST
//! /api/v1/dsar/erase` run it, leased and recorded as every run is.
//!
//! 1. In one transaction: the UTC days of their exported rows are kept in `erasure_requests`,
//!    their rows go from `interaction_history` (its capture queue too), `decision_traces`,
//!    `interaction_summaries` and `engagement_health` (the classes not on legal hold), and the
//!    audit row of the counts is written. `suppressions` stay: they are how the application
//!    honours the objection.
//! 2. An export run that began before could still write their rows: it is waited for.
//! 3. Every export file of those days is rewritten without their lines (`export::rewrite`),
//!    each audited; a file left with none is removed, with its object.
//! 4. The request is done. A run killed anywhere is finished by the next: the journaled
//!    rewrites first, then the request's days again (files already rewritten hold no line).

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::dsar_purge::policy::{Class, Retention, retention};
use super::{Job, JobCtx, JobError, JobOutput};
use crate::clock::{from_store_text, to_store_text};
use crate::export::format::{FileFormat, Subject};
use crate::export::rewrite::{Change, Rewriting, Rewritten};
use crate::export::storage::Storage;
use crate::store::Store;
use crate::store::export_rewrite::{CommittedFile, files_before, files_of_days};
use crate::store::runs;

/// One person: a customer of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSubject {
    pub tenant_id: String,
    pub customer_id: String,
}

impl DataSubject {
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            tenant_id: &self.tenant_id,
            customer_id: &self.customer_id,
        }
    }
}

/// The tables erased, each with the class whose legal hold keeps it.
pub const TABLES: [(&str, Class); 4] = [
    ("interaction_history", Class::InteractionHistory),
    ("decision_traces", Class::DecisionTraces),
    // Derived from interaction_history: held with it.
    ("interaction_summaries", Class::InteractionHistory),
    ("engagement_health", Class::InteractionHistory),
];

/// How often the wait for an earlier export run looks again.
const EXPORT_WAIT_POLL: Duration = Duration::from_millis(100);

pub struct DsarErase {
    subject: DataSubject,
}

impl DsarErase {
    pub fn new(subject: DataSubject) -> DsarErase {
        DsarErase { subject }
    }
}

impl Job for DsarErase {
    fn name(&self) -> &'static str {
        "dsar-erase"
    }

    /// Never scheduled: it is not in the registry.
    fn default_schedule(&self) -> &'static str {
        ""
    }

    fn enabled_by_default(&self, _config: &crate::config::Config) -> bool {
        false
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let subject = &self.subject;
        let rewriting = ctx.rewriting()?;
        let mut errors = Vec::new();
        if !ctx.params.dry_run
            && let Err(error) = rewriting.recover(&mut errors)
        {
            errors.push(error.to_string());
        }
        let retention = retention(ctx, &subject.tenant_id)?;
        let held = held_tables(&retention);
        // Retention deletes rows before its cutoff but files only of the days before the
        // cutoff's: the files of the cutoff's day (and of days a purge has yet to reach) may
        // hold lines of theirs whose rows are gone, so those days are read too.
        let purged_through = retention
            .days
            .map(|days| (ctx.now() - chrono::Duration::days(days)).date_naive());
        let erased: Vec<&str> = TABLES
            .iter()
            .map(|(table, _)| *table)
            .filter(|table| !held.contains(table))
            .collect();
        let exports_held = held.contains(&"interaction_history");
        if ctx.params.dry_run {
            return dry_run(ctx, subject, &erased, &held, exports_held);
        }
        let (tables, days) = erase_rows(ctx, subject, &erased, &held)?;
        let mut files = Rewritten::default();
        let mut finished = true;
        if !exports_held {
            match files_of_subject(ctx, &rewriting, subject, &days, purged_through, &mut errors) {
                Ok((done, all)) => {
                    files = done;
                    finished = all;
                }
                Err(error) => errors.push(error.to_string()),
            }
        }
        if finished && errors.is_empty() {
            forget_request(ctx, subject)?;
        }
        let rows: u64 = tables.values().filter_map(Value::as_u64).sum();
        let item_errors = errors.len() as u64;
        let report = Report {
            tenant_id: &subject.tenant_id,
            customer_id: &subject.customer_id,
            dry_run: false,
            tables,
            files: Files::of(&files),
            held,
            finished: Some(finished),
            errors,
        };
        JobOutput::new(&report, item_errors, rows + files.rows_left_out)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    tenant_id: &'a str,
    customer_id: &'a str,
    dry_run: bool,
    /// Rows erased (or, in a dry run, to erase) per table.
    tables: Map<String, Value>,
    files: Files,
    /// Tables a legal hold keeps.
    held: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished: Option<bool>,
    errors: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Files {
    rewritten: u64,
    removed: u64,
    removed_lines: u64,
}

impl Files {
    fn of(done: &Rewritten) -> Files {
        Files {
            rewritten: done.rewritten,
            removed: done.removed,
            removed_lines: done.rows_left_out,
        }
    }
}

/// The tables a legal hold of the tenant keeps (a hold on the whole tenant keeps them all).
fn held_tables(retention: &Retention) -> Vec<&'static str> {
    TABLES
        .iter()
        .filter(|(_, class)| {
            retention.whole_tenant_held.is_some() || retention.held.contains(class)
        })
        .map(|(table, _)| *table)
        .collect()
}

fn dry_run(
    ctx: &JobCtx<'_>,
    subject: &DataSubject,
    erased: &[&str],
    held: &[&'static str],
    exports_held: bool,
) -> Result<JobOutput, JobError> {
    let conn = ctx.store.conn()?;
    let mut tables = Map::new();
    for table in erased {
        let count: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = ?1 AND customer_id = ?2"),
            params![subject.tenant_id, subject.customer_id],
            |row| row.get(0),
        )?;
        tables.insert(table.to_string(), json!(count));
    }
    drop(conn);
    let (mut files, mut lines) = (0u64, 0u64);
    if !exports_held {
        let days = subject_days(ctx.store, subject)?;
        for file in files_of_days(ctx.store, &subject.tenant_id, &days)? {
            let storage = ctx.storage()?;
            let found = exported_lines(ctx.data_dir(), storage.as_ref(), &file, subject)?;
            if !found.is_empty() {
                files += 1;
                lines += found.len() as u64;
            }
        }
    }
    let report = Report {
        tenant_id: &subject.tenant_id,
        customer_id: &subject.customer_id,
        dry_run: true,
        tables,
        files: Files {
            rewritten: files,
            removed: 0,
            removed_lines: lines,
        },
        held: held.to_vec(),
        finished: None,
        errors: Vec::new(),
    };
    JobOutput::new(&report, 0, 0)
}

/// The subject's lines in one export file, each as its object.
pub fn exported_lines(
    data_dir: &Path,
    storage: Option<&Storage>,
    file: &CommittedFile,
    subject: &DataSubject,
) -> Result<Vec<Value>, JobError> {
    let Some(format) = FileFormat::of_path(&file.path) else {
        return Ok(Vec::new());
    };
    let local = data_dir.join(&file.path);
    let reading = || JobError::io(format!("reading {}", file.path));
    if local.exists() {
        let source = File::open(&local).map_err(reading())?;
        return format.rows_of(source, subject.subject()).map_err(reading());
    }
    let Some(storage) = storage.filter(|_| file.uploaded) else {
        return Err(JobError::Failed(format!(
            "{}: neither on disk nor in the bucket",
            file.path
        )));
    };
    // Removed locally after its upload: read from the bucket, through a copy of our own.
    let dir = data_dir
        .join(crate::config::layout::REWRITES)
        .join("access");
    std::fs::create_dir_all(&dir).map_err(JobError::io(format!("creating {}", dir.display())))?;
    let copy = dir.join(format!("access-{}-{}.copy", std::process::id(), file.id));
    let read = (|| {
        let mut out = File::create(&copy).map_err(reading())?;
        storage
            .download(&storage.key(&file.path), &mut out)
            .map_err(|error| JobError::Failed(format!("{}: {error}", file.path)))?;
        let source = File::open(&copy).map_err(reading())?;
        format.rows_of(source, subject.subject()).map_err(reading())
    })();
    let _ = std::fs::remove_file(&copy);
    read
}

/// The UTC days (`YYYY-MM-DD`) the subject's interaction rows are on, with those of an
/// unfinished erasure of theirs.
pub fn subject_days(store: &Store, subject: &DataSubject) -> Result<Vec<String>, JobError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(
        "SELECT DISTINCT edgecron_instant(created_at) / 86400000 FROM interaction_history
          WHERE tenant_id = ?1 AND customer_id = ?2 AND edgecron_instant(created_at) IS NOT NULL",
    )?;
    let mut days: Vec<String> = statement
        .query_map(params![subject.tenant_id, subject.customer_id], |row| {
            row.get::<_, i64>(0)
        })?
        .filter_map(|day| utc_day(day.ok()? * 86_400_000))
        .collect();
    days.extend(requested_days(&conn, subject)?);
    days.sort();
    days.dedup();
    Ok(days)
}

/// Step 1: the request with its days, the rows of the tables not held and their audit row,
/// in one transaction. The subject's interaction rows are found once (a pass over the
/// tenant's rows) and deleted by rowid. Answers each table's count, and the days whose export
/// files may hold their lines.
fn erase_rows(
    ctx: &JobCtx<'_>,
    subject: &DataSubject,
    erased: &[&str],
    held: &[&str],
) -> Result<(Map<String, Value>, Vec<String>), JobError> {
    let now = to_store_text(ctx.now());
    let mut conn = ctx.store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let who = params![subject.tenant_id, subject.customer_id];
    let mut days = requested_days(&tx, subject)?;
    let mut tables = Map::new();
    for table in erased {
        let deleted = if *table == "interaction_history" {
            let mut rowids = Vec::new();
            {
                let mut statement = tx.prepare(
                    "SELECT rowid, edgecron_instant(created_at) FROM interaction_history
                      WHERE tenant_id = ?1 AND customer_id = ?2",
                )?;
                let mut rows = statement.query(who)?;
                while let Some(row) = rows.next()? {
                    rowids.push(row.get::<_, i64>(0)?);
                    if let Some(day) = row.get::<_, Option<i64>>(1)?.and_then(utc_day) {
                        days.push(day);
                    }
                }
            }
            days.sort();
            days.dedup();
            if !days.is_empty() {
                tx.execute(
                    "INSERT INTO erasure_requests (tenant_id, customer_id, days, requested_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant_id, customer_id) DO UPDATE SET days = excluded.days",
                    params![
                        subject.tenant_id,
                        subject.customer_id,
                        serde_json::to_string(&days).unwrap_or_default(),
                        now
                    ],
                )?;
            }
            let rowids = serde_json::to_string(&rowids).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "DELETE FROM interaction_capture WHERE item_id IN
                     (SELECT id FROM interaction_history WHERE rowid IN (SELECT value FROM json_each(?1)))",
                [&rowids],
            )?;
            tx.execute(
                "DELETE FROM interaction_history WHERE rowid IN (SELECT value FROM json_each(?1))",
                [&rowids],
            )?
        } else {
            tx.execute(
                &format!("DELETE FROM {table} WHERE tenant_id = ?1 AND customer_id = ?2"),
                who,
            )?
        };
        tables.insert(table.to_string(), json!(deleted));
    }
    let details = json!({"runId": ctx.run_id, "customerId": subject.customer_id, "tables": tables, "held": held});
    tx.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, target, details, created_at)
         VALUES (?1, 'edgecron', 'dsar.erase', ?2, ?3, ?4)",
        params![
            subject.tenant_id,
            subject.customer_id,
            details.to_string(),
            now
        ],
    )?;
    tx.commit()?;
    Ok((tables, days))
}

/// The days an unfinished erasure of the subject recorded.
fn requested_days(
    conn: &rusqlite::Connection,
    subject: &DataSubject,
) -> Result<Vec<String>, JobError> {
    let requested: Option<String> = conn
        .query_row(
            "SELECT days FROM erasure_requests WHERE tenant_id = ?1 AND customer_id = ?2",
            params![subject.tenant_id, subject.customer_id],
            |row| row.get(0),
        )
        .optional()?;
    Ok(requested
        .and_then(|days| serde_json::from_str(&days).ok())
        .unwrap_or_default())
}

/// `YYYY-MM-DD` of the UTC day of Unix milliseconds.
fn utc_day(millis: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(millis).map(|at| at.format("%Y-%m-%d").to_string())
}

/// Steps 2 and 3: waits for an export run that began before the rows went, then rewrites
/// each file of the subject's days. Answers what was done and whether every file was.
fn files_of_subject(
    ctx: &JobCtx<'_>,
    rewriting: &Rewriting<'_>,
    subject: &DataSubject,
    days: &[String],
    purged_through: Option<chrono::NaiveDate>,
    errors: &mut Vec<String>,
) -> Result<(Rewritten, bool), JobError> {
    if days.is_empty() && purged_through.is_none() {
        return Ok((Rewritten::default(), true));
    }
    if !earlier_exports_ended(ctx)? {
        errors.push(
            "an export run that began before the erasure is still running; run the erasure again once it ends".into(),
        );
        return Ok((Rewritten::default(), false));
    }
    let audit = json!({"action": "dsar.erase.file", "details": {"runId": ctx.run_id, "customerId": subject.customer_id}});
    let mut files = files_of_days(ctx.store, &subject.tenant_id, days)?;
    if let Some(day) = purged_through.and_then(|day| day.succ_opt()) {
        let day = day.format("%Y-%m-%d").to_string();
        files.extend(files_before(ctx.store, &subject.tenant_id, &day, i64::MAX)?);
        files.sort_by_key(|file| file.id);
        files.dedup_by_key(|file| file.id);
    }
    let should_stop = || ctx.should_stop();
    let (done, all) = rewriting.rewrite_all(
        &files,
        Change::Without(subject.subject()),
        &audit,
        &should_stop,
        errors,
    )?;
    if !all {
        return Ok((done, false));
    }
    log::info!(
        "dsar-erase {}: {} files rewritten, {} removed, {} lines left out",
        subject.tenant_id,
        done.rewritten,
        done.removed,
        done.rows_left_out
    );
    Ok((done, true))
}

/// Waits (within the run's deadline) until no live `export-interactions` run that began
/// before now holds its lease: such a run may have read the rows just erased.
fn earlier_exports_ended(ctx: &JobCtx<'_>) -> Result<bool, JobError> {
    let began = ctx.now();
    let mut said = false;
    loop {
        let Some(lease) = runs::lease(ctx.store, "export-interactions")? else {
            return Ok(true);
        };
        let lease_began = from_store_text(&lease.started_at).unwrap_or(began);
        let alive = crate::holder::is_alive(&lease.holder, lease.heartbeat_at, ctx.now());
        if lease_began > began || !alive {
            return Ok(true);
        }
        if ctx.should_stop() {
            return Ok(false);
        }
        if !said {
            log::info!("dsar-erase: waiting for export run {} to end", lease.run_id);
            said = true;
        }
        std::thread::sleep(EXPORT_WAIT_POLL);
    }
}

fn forget_request(ctx: &JobCtx<'_>, subject: &DataSubject) -> Result<(), JobError> {
    ctx.store.conn()?.execute(
        "DELETE FROM erasure_requests WHERE tenant_id = ?1 AND customer_id = ?2",
        params![subject.tenant_id, subject.customer_id],
    )?;
    Ok(())
}
