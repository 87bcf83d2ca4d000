-- The same `rows` table, with its CHECK constraints written as OR chains instead of IN lists.
-- SQLite checks `state IN ('pending', ...)` by building a temporary b-tree of the list every time
-- a row is written (an OpenEphemeral per UPDATE), and a run writes each row's state twice per
-- attempt: that was the largest cost of the ledger writer after the disk itself
-- (docs/performance.md). The OR chain means the same and is checked with plain comparisons.
-- SQLite cannot change a CHECK in place, so the table is rebuilt under the same name. Foreign
-- keys are on (attempts.key refers to rows(key)) and cannot be switched off inside the migration's
-- transaction, so they are deferred: dropping `rows` leaves every attempt without its row for a
-- moment, and putting the rows back satisfies them again before the commit checks.

PRAGMA defer_foreign_keys = ON;

-- Dropping a parent row and putting it back each look its attempts up by key; attempts has no
-- index on key (migration 02), so without this one index the rebuild would scan every attempt
-- for every row (quadratic: hours for a ledger of a million rows). Dropped again at the end.
CREATE INDEX attempts_by_key_for_migration_03 ON attempts (key);

CREATE TEMP TABLE rows_copy AS SELECT rowid AS copied_rowid, * FROM rows;
DROP TABLE rows;

CREATE TABLE rows (
    -- MERCHANT_PMS|partner_id|merchant_id|store_id  or  IPAY_TRADE_NO|ipay_trade_no
    key              TEXT PRIMARY KEY,
    save_way_type    TEXT NOT NULL CHECK (save_way_type = 'MERCHANT_PMS' OR save_way_type = 'IPAY_TRADE_NO'),
    ipay_trade_no    TEXT NOT NULL,
    partner_id       TEXT NOT NULL,
    merchant_id      TEXT NOT NULL,
    merchant_name    TEXT NOT NULL,
    store_id         TEXT NOT NULL,
    store_name       TEXT NOT NULL,
    mall_group_label TEXT NOT NULL,
    mall_label       TEXT NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state = 'pending' OR state = 'in_flight' OR state = 'succeeded'
                            OR state = 'already_circled' OR state = 'failed'),
    -- for state = failed: transient (retried on the next run) or permanent (--retry-failed)
    failure          TEXT CHECK (failure = 'transient' OR failure = 'permanent'),
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

INSERT INTO rows (rowid, key, save_way_type, ipay_trade_no, partner_id, merchant_id, merchant_name, store_id, store_name, mall_group_label, mall_label, state, failure, ambiguous, maybe_sent, pms_label, result_code, result_message, attempts, source_file, source_line, run_id, seq, created_at, updated_at)
SELECT copied_rowid, key, save_way_type, ipay_trade_no, partner_id, merchant_id, merchant_name, store_id, store_name, mall_group_label, mall_label, state, failure, ambiguous, maybe_sent, pms_label, result_code, result_message, attempts, source_file, source_line, run_id, seq, created_at, updated_at FROM rows_copy;
DROP TABLE rows_copy;
DROP INDEX attempts_by_key_for_migration_03;

CREATE INDEX rows_by_run ON rows (run_id, seq);
CREATE INDEX rows_in_flight ON rows (key) WHERE state = 'in_flight';
CREATE INDEX rows_failed ON rows (source_file, source_line) WHERE state = 'failed';
CREATE INDEX rows_ambiguous ON rows (source_file, source_line) WHERE ambiguous = 1;
