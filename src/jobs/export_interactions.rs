//! `export-interactions`: for each active tenant, the interaction rows not yet exported, in
//! the order they were committed, at most `EXPORT_BATCH_SIZE`, as Hive-partitioned NDJSON
//! committed exactly once (`export::batch`). One tenant failing does not stop the others.

use serde::Serialize;
use serde_json::Value;

use super::capture_gap::{self, GapCheck};
use super::{Consuming, Job, JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;
use crate::config::Config;
use crate::export::batch::{BatchReport, BatchSettings, InvalidRow, export_tenants};
use crate::export::exported_ids::add_exported_ids;
use crate::export::format::FileFormat;
use crate::store::capture::{self, Source};
use crate::store::manifest::Upload;

pub struct ExportInteractions;

impl Job for ExportInteractions {
    fn name(&self) -> &'static str {
        "export-interactions"
    }

    fn default_schedule(&self) -> &'static str {
        "0 * * * *"
    }

    fn enabled_by_default(&self, _config: &Config) -> bool {
        false
    }

    fn consumes(&self, _config: &Config) -> Option<(Source, Consuming)> {
        Some((Source::Interactions, Consuming::Yes))
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let gap = match capture_gap::check(ctx, Source::Interactions, |known| {
            add_exported_ids(ctx.store, ctx.data_dir(), ctx.storage()?.as_ref(), known)
                .map(drop)
                .map_err(JobError::from)
        })? {
            GapCheck::Clear(report) => report,
            // Nothing is taken from the queue until every missed row is in it.
            GapCheck::Unfinished(report) => {
                let report = Report {
                    total_exported: 0,
                    tenants: Vec::new(),
                    finished: false,
                    walking: None,
                    capture_gap: Some(report),
                    dry_run: false,
                };
                return JobOutput::new(&report, 1, 0);
            }
        };
        let tenants = active_tenants(ctx)?;
        let site = ctx.site()?;
        let now_text = to_store_text(ctx.now());
        let settings = BatchSettings {
            store: ctx.store,
            data_dir: ctx.data_dir(),
            site: &site,
            batch_size: ctx.config.export_batch_size,
            upload: if ctx.config.s3.is_some() {
                Upload::Queued
            } else {
                Upload::LocalOnly
            },
            format: FileFormat::configured(ctx.config.export_format, ctx.config.export_compression),
            writers: ctx.config.export_parallelism,
            now_text: &now_text,
        };
        let mut total_exported = 0;
        let mut failed = 0;
        let mut results = Vec::with_capacity(tenants.len());
        if ctx.params.dry_run {
            let waiting = crate::store::manifest::waiting_by_tenant(ctx.store)?;
            for (tenant_id, tenant_name) in &tenants {
                let pending = waiting
                    .get(tenant_id)
                    .copied()
                    .unwrap_or(0)
                    .min(ctx.config.export_batch_size as u64);
                total_exported += pending;
                results.push(TenantResult::new(tenant_id, tenant_name, pending));
            }
        } else {
            let tenant_ids: Vec<&str> = tenants.iter().map(|(id, _)| id.as_str()).collect();
            let should_stop = || ctx.should_stop();
            for ((tenant_id, tenant_name), outcome) in
                tenants
                    .iter()
                    .zip(export_tenants(&settings, &tenant_ids, &should_stop))
            {
                results.push(match outcome {
                    Ok(report) => {
                        total_exported += report.rows;
                        TenantResult::exported(tenant_id, tenant_name, report)
                    }
                    Err(error) => {
                        failed += 1;
                        log::error!("export {tenant_id}: {error}");
                        TenantResult {
                            error: Some(error.to_string()),
                            error_kind: Some(error.kind()),
                            ..TenantResult::new(tenant_id, tenant_name, 0)
                        }
                    }
                });
            }
        }
        if !ctx.params.dry_run {
            let waiting = crate::store::manifest::record_backlog_by_tenant(ctx.store, &now_text)?;
            let takeable = tenants
                .iter()
                .filter_map(|(tenant_id, _)| waiting.get(tenant_id))
                .sum();
            capture::record_backlog(ctx.store, Source::Interactions, takeable)?;
            capture::note_backlog(ctx.store, Source::Interactions)?;
        }
        // Stopped by the deadline or a shutdown: each tenant's batch is committed as far as it got.
        let finished = !ctx.should_stop();
        // Until the first walk over the table is done, a run may take rows without exporting
        // any (a stretch of inactive tenants' rows): more runs are needed however few it wrote.
        let walking = !capture::state(ctx.store, Source::Interactions)?.live;
        let dry_run = ctx.params.dry_run;
        let report = Report {
            total_exported,
            tenants: results,
            finished,
            walking: Some(walking),
            capture_gap: gap,
            dry_run,
        };
        JobOutput::new(&report, failed, if dry_run { 0 } else { total_exported })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    total_exported: u64,
    tenants: Vec<TenantResult<'a>>,
    finished: bool,
    /// Whether the first walk over the table is still going (absent when nothing was read).
    #[serde(skip_serializing_if = "Option::is_none")]
    walking: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_gap: Option<Value>,
    dry_run: bool,
}

/// One tenant's part of a run.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantResult<'a> {
    tenant_id: &'a str,
    tenant_name: &'a str,
    exported: u64,
    /// The first of `files`, as the replaced handler's one file.
    file_path: Option<String>,
    files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payloads_kept_as_strings: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid: Option<Vec<InvalidRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_kind: Option<&'static str>,
}

impl<'a> TenantResult<'a> {
    fn new(tenant_id: &'a str, tenant_name: &'a str, exported: u64) -> TenantResult<'a> {
        TenantResult {
            tenant_id,
            tenant_name,
            exported,
            file_path: None,
            files: Vec::new(),
            bytes: None,
            payloads_kept_as_strings: None,
            invalid: None,
            invalid_count: None,
            error: None,
            error_kind: None,
        }
    }

    fn exported(tenant_id: &'a str, tenant_name: &'a str, report: BatchReport) -> TenantResult<'a> {
        let files: Vec<String> = report.files.into_iter().map(|file| file.path).collect();
        let with_invalid = report.invalid_count > 0;
        TenantResult {
            file_path: files.first().cloned(),
            files,
            bytes: Some(report.bytes),
            payloads_kept_as_strings: Some(report.payloads_kept_as_strings)
                .filter(|kept| *kept > 0),
            invalid: with_invalid.then_some(report.invalid),
            invalid_count: with_invalid.then_some(report.invalid_count),
            ..TenantResult::new(tenant_id, tenant_name, report.rows)
        }
    }
}

fn active_tenants(ctx: &JobCtx<'_>) -> Result<Vec<(String, String)>, JobError> {
    let conn = ctx.store.conn()?;
    let mut statement =
        conn.prepare("SELECT id, name FROM tenants WHERE active = 1 ORDER BY id")?;
    let tenants = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tenants)
}
