//! `export-interactions`: for each active tenant, the interaction rows not yet exported, in
//! the order they were committed, at most `EXPORT_BATCH_SIZE`, as Hive-partitioned NDJSON
//! committed exactly once (`export::batch`). One tenant failing does not stop the others.

use serde_json::{Value, json};

use super::capture_gap::{self, GapCheck};
use super::{Consuming, Job, JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;
use crate::config::Config;
use crate::export::batch::{BatchSettings, export_tenants};
use crate::export::exported_ids::add_exported_ids;
use crate::export::format::FileFormat;
use crate::store::capture::{self, Source};
use crate::store::export::Upload;

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
                return Ok(JobOutput {
                    body: json!({"ok": false, "totalExported": 0, "tenants": [], "finished": false,
                                 "captureGap": report, "dryRun": false}),
                    item_errors: 1,
                    rows_processed: 0,
                });
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
            let waiting = crate::store::export::waiting_by_tenant(ctx.store)?;
            for (tenant_id, tenant_name) in &tenants {
                let pending = waiting
                    .get(tenant_id)
                    .copied()
                    .unwrap_or(0)
                    .min(ctx.config.export_batch_size as u64);
                total_exported += pending;
                results.push(json!({"tenantId": tenant_id, "tenantName": tenant_name, "exported": pending, "filePath": null, "files": []}));
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
                        let files: Vec<&str> =
                            report.files.iter().map(|file| file.path.as_str()).collect();
                        let mut body = json!({
                            "tenantId": tenant_id,
                            "tenantName": tenant_name,
                            "exported": report.rows,
                            "filePath": files.first(),
                            "files": files,
                            "bytes": report.bytes,
                        });
                        if report.payloads_kept_as_strings > 0 {
                            body["payloadsKeptAsStrings"] = json!(report.payloads_kept_as_strings);
                        }
                        if report.invalid_count > 0 {
                            body["invalid"] = json!(report.invalid);
                            body["invalidCount"] = json!(report.invalid_count);
                        }
                        body
                    }
                    Err(error) => {
                        failed += 1;
                        log::error!("export {tenant_id}: {error}");
                        json!({
                            "tenantId": tenant_id,
                            "tenantName": tenant_name,
                            "exported": 0,
                            "filePath": null,
                            "files": [],
                            "error": error.to_string(),
                            "errorKind": error.kind(),
                        })
                    }
                });
            }
        }
        if !ctx.params.dry_run {
            let waiting = crate::store::export::record_backlog_by_tenant(ctx.store, &now_text)?;
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
        let mut body = json!({
            "ok": failed == 0,
            "totalExported": total_exported,
            "tenants": Value::Array(results),
            "finished": finished,
            "walking": walking,
            "dryRun": ctx.params.dry_run,
        });
        if let Some(gap) = gap {
            body["captureGap"] = gap;
        }
        Ok(JobOutput {
            body,
            item_errors: failed,
            rows_processed: if ctx.params.dry_run {
                0
            } else {
                total_exported
            },
        })
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
