-- This store's site (SPEC section 9): recorded when the store is first used for work, with the
-- machine id of the host it is on, so a store copied or moved to another host is noticed.
CREATE TABLE site (
    singleton   INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    site_id     TEXT NOT NULL,
    machine_id  TEXT,                           -- NULL: the host had no machine id
    recorded_at TEXT NOT NULL
);
