-- The ledger: one row per store identity, every attempt, every run, every reject.
-- Readable with the sqlite3 shell; states are plain words.

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    -- running while it goes; completed, interrupted (Ctrl-C) or aborted (fatal answers, bad input)
    outcome     TEXT NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'completed', 'interrupted', 'aborted', 'crashed')),
    -- the settings as JSON, key file paths included, key content never
    config      TEXT NOT NULL,
    rows_read   INTEGER NOT NULL DEFAULT 0,
    to_send     INTEGER NOT NULL DEFAULT 0,
    succeeded   INTEGER NOT NULL DEFAULT 0,
    already_circled INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    rejected    INTEGER NOT NULL DEFAULT 0,
    duplicates  INTEGER NOT NULL DEFAULT 0,
    already_done INTEGER NOT NULL DEFAULT 0,
    drifted     INTEGER NOT NULL DEFAULT 0,
    message     TEXT
);

CREATE TABLE run_files (
    run_id  INTEGER NOT NULL REFERENCES runs(id),
    path    TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    bytes   INTEGER NOT NULL
);

CREATE TABLE rows (
    -- MERCHANT_PMS|partner_id|merchant_id|store_id  or  IPAY_TRADE_NO|ipay_trade_no
    key              TEXT PRIMARY KEY,
    save_way_type    TEXT NOT NULL CHECK (save_way_type IN ('MERCHANT_PMS', 'IPAY_TRADE_NO')),
    ipay_trade_no    TEXT NOT NULL,
    partner_id       TEXT NOT NULL,
    merchant_id      TEXT NOT NULL,
    merchant_name    TEXT NOT NULL,
    store_id         TEXT NOT NULL,
    store_name       TEXT NOT NULL,
    mall_group_label TEXT NOT NULL,
    mall_label       TEXT NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('pending', 'in_flight', 'succeeded', 'already_circled', 'failed')),
    -- for state = failed: transient (retried on the next run) or permanent (--retry-failed)
    failure          TEXT CHECK (failure IN ('transient', 'permanent')),
    -- already_circled after an earlier attempt whose outcome was unknown: most likely our own call
    ambiguous        INTEGER NOT NULL DEFAULT 0,
    -- some attempt had an unknown outcome (time-out, UNKNOWN_EXCEPTION, killed while in flight)
    maybe_sent       INTEGER NOT NULL DEFAULT 0,
    pms_label        TEXT,
    result_code      TEXT,
    result_message   TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    source_file      TEXT NOT NULL,
    source_line      INTEGER NOT NULL,
    -- the last run whose input held this row, and the row's place in that input
    run_id           INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX rows_by_run ON rows (run_id, seq);
CREATE INDEX rows_by_state ON rows (state);

CREATE TABLE attempts (
    id             INTEGER PRIMARY KEY,
    key            TEXT NOT NULL REFERENCES rows(key),
    run_id         INTEGER NOT NULL REFERENCES runs(id),
    attempt        INTEGER NOT NULL,
    started_at     TEXT NOT NULL,
    latency_ms     INTEGER,
    http_status    INTEGER,
    result_code    TEXT,
    result_status  TEXT,
    result_message TEXT,
    error          TEXT,
    -- NULL while in flight; then success, already_circled, transient, permanent, fatal,
    -- or lost (the process ended while the request was in flight)
    outcome        TEXT
);
CREATE INDEX attempts_by_key ON attempts (key);
CREATE INDEX attempts_by_run ON attempts (run_id);

CREATE TABLE rejects (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    file        TEXT NOT NULL,
    line        INTEGER NOT NULL,
    column_name TEXT NOT NULL,
    value       TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX rejects_by_run ON rejects (run_id);

-- rows done earlier whose sheet now says something else: the API cannot move a store
CREATE TABLE drift (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    key         TEXT NOT NULL,
    source_file TEXT NOT NULL,
    source_line INTEGER NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX drift_by_run ON drift (run_id);
