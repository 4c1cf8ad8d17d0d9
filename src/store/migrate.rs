//! Ordered, idempotent schema migrations, embedded from `schema/*.sql` and recorded by number.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Append-only: a released migration is never edited, a change is a new file.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("../../schema/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_export_batches",
        sql: include_str!("../../schema/0002_export_batches.sql"),
    },
    Migration {
        version: 3,
        name: "0003_maintenance_status",
        sql: include_str!("../../schema/0003_maintenance_status.sql"),
    },
    Migration {
        version: 4,
        name: "0004_siem",
        sql: include_str!("../../schema/0004_siem.sql"),
    },
    Migration {
        version: 5,
        name: "0005_export_metrics_hourly",
        sql: include_str!("../../schema/0005_export_metrics_hourly.sql"),
    },
    Migration {
        version: 6,
        name: "0006_engagement_health",
        sql: include_str!("../../schema/0006_engagement_health.sql"),
    },
    Migration {
        version: 7,
        name: "0007_gitops",
        sql: include_str!("../../schema/0007_gitops.sql"),
    },
    Migration {
        version: 8,
        name: "0008_alerts_reports",
        sql: include_str!("../../schema/0008_alerts_reports.sql"),
    },
    Migration {
        version: 9,
        name: "0009_run_stats",
        sql: include_str!("../../schema/0009_run_stats.sql"),
    },
    Migration {
        version: 10,
        name: "0010_capture",
        sql: include_str!("../../schema/0010_capture.sql"),
    },
    Migration {
        version: 11,
        name: "0011_occurrences_alerts",
        sql: include_str!("../../schema/0011_occurrences_alerts.sql"),
    },
    Migration {
        version: 12,
        name: "0012_export_metric_ids",
        sql: include_str!("../../schema/0012_export_metric_ids.sql"),
    },
    Migration {
        version: 13,
        name: "0013_export_raw_bytes",
        sql: include_str!("../../schema/0013_export_raw_bytes.sql"),
    },
    Migration {
        version: 14,
        name: "0014_capture_heal",
        sql: include_str!("../../schema/0014_capture_heal.sql"),
    },
    Migration {
        version: 15,
        name: "0015_noted_backlog",
        sql: include_str!("../../schema/0015_noted_backlog.sql"),
    },
    Migration {
        version: 16,
        name: "0016_switchover",
        sql: include_str!("../../schema/0016_switchover.sql"),
    },
    Migration {
        version: 17,
        name: "0017_site",
        sql: include_str!("../../schema/0017_site.sql"),
    },
    Migration {
        version: 18,
        name: "0018_run_site",
        sql: include_str!("../../schema/0018_run_site.sql"),
    },
    Migration {
        version: 19,
        name: "0019_pings",
        sql: include_str!("../../schema/0019_pings.sql"),
    },
    Migration {
        version: 20,
        name: "0020_erasure",
        sql: include_str!("../../schema/0020_erasure.sql"),
    },
];

pub(super) fn apply_pending(conn: &mut Connection) -> Result<usize, StoreError> {
    let known = MIGRATIONS.last().map_or(0, |migration| migration.version);
    // An up-to-date store is read, not written: opening it never waits for the write lock.
    if current_version(conn)? == Some(known) {
        return Ok(0);
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version     INTEGER PRIMARY KEY,
             name        TEXT NOT NULL,
             applied_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         )",
    )?;
    let mut applied = 0;
    for migration in MIGRATIONS {
        // One immediate transaction per migration: two processes migrating at once serialise,
        // and the second finds the version recorded and skips it.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )?;
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        if current >= migration.version {
            continue;
        }
        tx.execute_batch(migration.sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
            (migration.version, migration.name),
        )?;
        tx.commit()?;
        log::info!("applied migration {}", migration.name);
        applied += 1;
    }
    Ok(applied)
}

fn current_version(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    Ok(
        conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
            row.get(0)
        })?,
    )
}

#[cfg(test)]
mod tests {
    use crate::store::test_support::temp_store;

    #[test]
    fn migrating_twice_applies_nothing_the_second_time() {
        let (_dir, store) = temp_store();
        assert_eq!(store.migrate().unwrap(), 0);
        let version: i64 = store
            .conn()
            .unwrap()
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
                row.get(0)
            })
            .unwrap();
        let last = super::MIGRATIONS.last().map(|migration| migration.version);
        assert_eq!(Some(version), last);
    }

    #[test]
    fn contract_tables_accept_inserts_naming_only_contract_columns() {
        let (_dir, store) = temp_store();
        let conn = store.conn().unwrap();
        conn.execute_batch(
            "INSERT INTO tenants (id, name, active) VALUES ('t1', 'T', 1);
             INSERT INTO interaction_history (id, tenant_id, customer_id, channel, outcome, payload, created_at)
                 VALUES ('i1', 't1', 'c1', 'email', 'opened', '{}', '2026-01-01T00:00:00.000Z');
             INSERT INTO suppressions (id, tenant_id, customer_id, expires_at) VALUES ('s1', 't1', 'c1', NULL);
             INSERT INTO interaction_summaries (id, tenant_id, period_type, period_start) VALUES ('m1', 't1', 'daily', '2026-01-01');
             INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES ('t1', 'all', 30, 0);
             INSERT INTO decision_traces (id, tenant_id, created_at) VALUES ('d1', 't1', '2026-01-01T00:00:00.000Z');
             INSERT INTO ai_attachments (id, tenant_id, created_at, blob_path) VALUES ('a1', 't1', '2026-01-01T00:00:00.000Z', 'x');
             INSERT INTO audit_log (id, tenant_id, created_at) VALUES ('l1', 't1', '2026-01-01T00:00:00.000Z');
             INSERT INTO telemetry_events (id, event, user_id, meta, created_at) VALUES ('e1', 'login', 'u1', '{}', '2026-01-01T00:00:00.000Z');
             INSERT INTO telemetry_daily (date, event, count, unique_users, meta) VALUES ('2026-01-01', 'login', 1, 1, '{}');",
        )
        .unwrap();
    }
}
