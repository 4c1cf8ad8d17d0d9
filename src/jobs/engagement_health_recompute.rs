//! `engagement-health-recompute`: score each active tenant's customers from their recent
//! interactions, 0 (gone quiet) to 100 (engaged), and upsert the score with what it came from.
//!
//! The score, over the last 90 days:
//!
//! | part | weight | value |
//! |---|---|---|
//! | recency | 40% | `1 - days since the last interaction / 90` |
//! | frequency | 35% | `0.6 * min(interactions in 30 days, 10) / 10 + 0.4 * min(interactions in 90 days, 30) / 30` |
//! | outcomes | 25% | share of the 90 days' interactions with a positive outcome |
//!
//! Positive outcomes: `opened`, `clicked`, `replied`, `converted`, `accepted`, `resolved`,
//! `positive`, `success`. A customer with no interaction in 90 days keeps their row and
//! decays: the score halves every 30 days since it was last computed, so it fades rather
//! than vanishes. The counting is one read per tenant; the writes go in short batches.

use chrono::{DateTime, Duration, Utc};
use rusqlite::TransactionBehavior;
use serde::Serialize;

use super::{Job, JobCtx, JobError, JobOutput};
use crate::clock::{from_store_text, to_store_text};

pub struct EngagementHealthRecompute;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    tenants: u64,
    customers_scored: u64,
    customers_decayed: u64,
    finished: bool,
    dry_run: bool,
}

const WINDOW_DAYS: i64 = 90;
const RECENT_DAYS: i64 = 30;
const DECAY_HALF_LIFE_DAYS: f64 = 30.0;
const WRITE_BATCH: usize = 500;
const POSITIVE_OUTCOMES: &str =
    "'opened', 'clicked', 'replied', 'converted', 'accepted', 'resolved', 'positive', 'success'";

/// What one customer's recent interactions add up to.
#[derive(Debug, Clone, PartialEq)]
struct Activity {
    customer_id: String,
    last_interaction_at: String,
    recent: i64,
    total: i64,
    positive: i64,
}

/// The documented score, rounded to a tenth.
fn score(activity: &Activity, now: DateTime<Utc>) -> f64 {
    let days_since = from_store_text(&activity.last_interaction_at)
        .map_or(WINDOW_DAYS as f64, |last| {
            (now - last).num_seconds().max(0) as f64 / 86_400.0
        });
    let recency = 1.0 - days_since.min(WINDOW_DAYS as f64) / WINDOW_DAYS as f64;
    let frequency = 0.6 * (activity.recent.min(10) as f64 / 10.0)
        + 0.4 * (activity.total.min(30) as f64 / 30.0);
    let outcomes = if activity.total > 0 {
        activity.positive as f64 / activity.total as f64
    } else {
        0.0
    };
    let score = 100.0 * (0.40 * recency + 0.35 * frequency + 0.25 * outcomes);
    (score * 10.0).round() / 10.0
}

/// A score last computed `days` ago, decayed. Not rounded: rounding each of many small steps
/// would stall the decay.
fn decayed(score: f64, days: f64) -> f64 {
    score * 0.5f64.powf(days.max(0.0) / DECAY_HALF_LIFE_DAYS)
}

impl Job for EngagementHealthRecompute {
    fn name(&self) -> &'static str {
        "engagement-health-recompute"
    }

    fn default_schedule(&self) -> &'static str {
        "15 3 * * *"
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let now = ctx.now();
        let now_text = to_store_text(now);
        let tenants: Vec<String> = {
            let conn = ctx.store.conn()?;
            let mut statement =
                conn.prepare("SELECT id FROM tenants WHERE active = 1 ORDER BY id")?;
            statement
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?
        };
        let (mut scored, mut decayed_count, mut done) = (0u64, 0u64, 0u64);
        for tenant in &tenants {
            if ctx.should_stop() {
                break;
            }
            let activity = recent_activity(ctx, tenant, now)?;
            scored += activity.len() as u64;
            if !ctx.params.dry_run {
                upsert_scores(ctx, tenant, &activity, now, &now_text)?;
                decayed_count += decay_quiet(ctx, tenant, now, &now_text)?;
            }
            done += 1;
        }
        let report = Report {
            tenants: done,
            customers_scored: scored,
            customers_decayed: decayed_count,
            finished: done == tenants.len() as u64,
            dry_run: ctx.params.dry_run,
        };
        JobOutput::new(&report, 0, scored + decayed_count)
    }
}

fn recent_activity(
    ctx: &JobCtx<'_>,
    tenant: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Activity>, JobError> {
    let conn = ctx.store.conn()?;
    let mut statement = conn.prepare_cached(&format!(
        "SELECT customer_id, MAX(created_at), SUM(created_at >= ?3), COUNT(*),
                SUM(outcome IN ({POSITIVE_OUTCOMES}))
           FROM interaction_history
          WHERE tenant_id = ?1 AND created_at >= ?2 AND customer_id <> ''
          GROUP BY customer_id"
    ))?;
    let since = to_store_text(now - Duration::days(WINDOW_DAYS));
    let recent = to_store_text(now - Duration::days(RECENT_DAYS));
    let rows = statement
        .query_map((tenant, since, recent), |row| {
            Ok(Activity {
                customer_id: row.get(0)?,
                last_interaction_at: row.get(1)?,
                recent: row.get(2)?,
                total: row.get(3)?,
                positive: row.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn upsert_scores(
    ctx: &JobCtx<'_>,
    tenant: &str,
    activity: &[Activity],
    now: DateTime<Utc>,
    now_text: &str,
) -> Result<(), JobError> {
    let mut conn = ctx.store.conn()?;
    for batch in activity.chunks(WRITE_BATCH) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO engagement_health (tenant_id, customer_id, score, last_interaction_at,
                     interactions_30d, interactions_90d, positive_90d, computed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
                     score = excluded.score, last_interaction_at = excluded.last_interaction_at,
                     interactions_30d = excluded.interactions_30d,
                     interactions_90d = excluded.interactions_90d,
                     positive_90d = excluded.positive_90d, computed_at = excluded.computed_at",
            )?;
            for customer in batch {
                upsert.execute((
                    tenant,
                    &customer.customer_id,
                    score(customer, now),
                    &customer.last_interaction_at,
                    customer.recent,
                    customer.total,
                    customer.positive,
                    now_text,
                ))?;
            }
        }
        tx.commit()?;
    }
    Ok(())
}

/// Decays the scores of the tenant's customers this run did not score; answers how many.
fn decay_quiet(
    ctx: &JobCtx<'_>,
    tenant: &str,
    now: DateTime<Utc>,
    now_text: &str,
) -> Result<u64, JobError> {
    let quiet: Vec<(String, f64, String)> = {
        let conn = ctx.store.conn()?;
        let mut statement = conn.prepare_cached(
            "SELECT customer_id, score, computed_at FROM engagement_health
              WHERE tenant_id = ?1 AND computed_at < ?2",
        )?;
        statement
            .query_map((tenant, now_text), |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<Result<_, _>>()?
    };
    let mut conn = ctx.store.conn()?;
    for batch in quiet.chunks(WRITE_BATCH) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE engagement_health
                    SET score = ?3, interactions_30d = 0, interactions_90d = 0, positive_90d = 0,
                        computed_at = ?4
                  WHERE tenant_id = ?1 AND customer_id = ?2",
            )?;
            for (customer, old_score, computed_at) in batch {
                let days = from_store_text(computed_at)
                    .map_or(0.0, |at| (now - at).num_seconds() as f64 / 86_400.0);
                update.execute((tenant, customer, decayed(*old_score, days), now_text))?;
            }
        }
        tx.commit()?;
    }
    Ok(quiet.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

    #[test]
    fn the_score_follows_its_documented_formula() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        let active = Activity {
            customer_id: "c".into(),
            last_interaction_at: "2026-05-01T00:00:00.000Z".into(),
            recent: 10,
            total: 30,
            positive: 30,
        };
        assert_eq!(score(&active, now), 100.0);
        let fading = Activity {
            last_interaction_at: "2026-03-17T00:00:00.000Z".into(), // 45 days ago
            recent: 0,
            total: 3,
            positive: 1,
            ..active
        };
        // 0.4 * 0.5 + 0.35 * (0.4 * 0.1) + 0.25 * (1/3) = 0.2 + 0.014 + 0.08333
        assert_eq!(score(&fading, now), 29.7);
        assert_eq!(decayed(80.0, 30.0), 40.0);
        assert_eq!(decayed(80.0, 0.0), 80.0);
        // Daily runs for a year decay as one year-long step does.
        let daily = (0..365).fold(60.0, |score, _| decayed(score, 1.0));
        assert!(
            (daily - decayed(60.0, 365.0)).abs() < 1e-9 && daily < 0.02,
            "{daily}"
        );
    }

    #[test]
    fn scores_are_upserted_and_quiet_customers_decay() {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap());
        harness.exec(
            "INSERT INTO tenants (id, name, active) VALUES ('acme', 'Acme', 1), ('off', 'Off', 0);
             INSERT INTO interaction_history (id, tenant_id, customer_id, outcome, created_at) VALUES
               ('1', 'acme', 'alice', 'clicked',   '2026-04-30T00:00:00.000Z'),
               ('2', 'acme', 'alice', 'delivered', '2026-04-01T00:00:00.000Z'),
               ('3', 'acme', 'bob',   'bounced',   '2026-02-15T00:00:00.000Z'),
               ('4', 'acme', 'old',   'clicked',   '2025-01-01T00:00:00.000Z'),
               ('5', 'off',  'eve',   'clicked',   '2026-04-30T00:00:00.000Z');
             INSERT INTO engagement_health (tenant_id, customer_id, score, computed_at) VALUES
               ('acme', 'old', 60.0, '2026-03-02T00:00:00.000Z');",
        );
        let output = EngagementHealthRecompute.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["tenants"], 1);
        assert_eq!(output.body["customersScored"], 2);
        assert_eq!(output.body["customersDecayed"], 1);
        assert_eq!(
            harness.strings(
                "SELECT customer_id || ' ' || score || ' ' || interactions_30d || ' ' || interactions_90d || ' ' || positive_90d
                   FROM engagement_health ORDER BY customer_id"
            ),
            // alice: 0.4*(1-1/90) + 0.35*(0.6*0.2 + 0.4*2/30) + 0.25*0.5 = 0.3956 + 0.0513 + 0.125
            // bob: 75 days quiet: 0.4*(15/90) + 0.35*(0.4/30) + 0 = 0.0667 + 0.0047
            // old: 60 halved after 60 days twice: 15
            ["alice 57.2 2 2 1", "bob 7.1 0 1 0", "old 15.0 0 0 0"]
        );
    }
}
