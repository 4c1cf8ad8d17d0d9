//! SQL against the store an `Env`'s binary writes: a connection, one-column queries, and
//! the rows tests plant to give a job real work.

use std::time::Duration;

use rusqlite::Connection;

use super::{Env, wait_until};

impl Env {
    pub fn db(&self) -> Connection {
        let conn = Connection::open(self.db_path()).expect("open store");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        conn
    }

    /// The first column of every row `sql` answers, as text.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        let db = self.db();
        let mut statement = db.prepare(sql).expect(sql);
        statement
            .query_map([], |row| row.get(0))
            .expect(sql)
            .collect::<Result<_, _>>()
            .expect(sql)
    }

    pub fn query_i64(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |row| row.get(0)).expect(sql)
    }

    /// The site the store records (once a run has bound it).
    pub fn site(&self) -> String {
        self.db()
            .query_row("SELECT site_id FROM site", [], |row| row.get(0))
            .expect("the store records its site")
    }

    /// Adds `count` expired suppressions: enough work to keep `cleanup` busy for a while
    /// (about two seconds per million rows here), a real long run for overlap and shutdown
    /// tests.
    /// The application inserts `count` rows named `{prefix}-{n}` into `tenants` in turn, the
    /// n-th created `age(n)` from now (an SQLite modifier: `-3 hours`), each commit durable.
    pub fn insert_interactions(
        &self,
        prefix: &str,
        count: usize,
        tenants: &[String],
        age: impl Fn(usize) -> String,
    ) {
        let db = self.db();
        db.execute_batch("PRAGMA synchronous = FULL")
            .expect("pragma");
        for n in 0..count {
            db.execute(
                "INSERT INTO interaction_history (id, tenant_id, customer_id, channel, outcome, payload, created_at)
                 VALUES (?1, ?2, 'c', 'email', 'opened', '{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3))",
                rusqlite::params![format!("{prefix}-{n}"), tenants[n % tenants.len()], age(n)],
            )
            .expect("insert");
        }
    }

    pub fn add_expired_suppressions(&self, count: i64) {
        self.db()
            .execute(
                "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < ?1)
                 INSERT INTO suppressions (id, expires_at) SELECT 'bulk-' || value, '2020-01-01T00:00:00.000Z' FROM n",
                [count],
            )
            .expect("add suppressions");
    }

    /// Waits until `job` has a run in the `running` state.
    pub fn wait_for_running(&self, job: &str) {
        let sql =
            format!("SELECT COUNT(*) FROM job_runs WHERE job = '{job}' AND status = 'running'");
        wait_until(Duration::from_secs(20), || self.query_i64(&sql) == 1);
    }
}
