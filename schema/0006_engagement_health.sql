-- engagement-health-recompute: each customer's engagement score (0-100) and what it came from.
CREATE TABLE engagement_health (
    tenant_id             TEXT NOT NULL,
    customer_id           TEXT NOT NULL,
    score                 REAL NOT NULL,
    last_interaction_at   TEXT,
    interactions_30d      INTEGER NOT NULL DEFAULT 0,
    interactions_90d      INTEGER NOT NULL DEFAULT 0,
    positive_90d          INTEGER NOT NULL DEFAULT 0,
    computed_at           TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);
