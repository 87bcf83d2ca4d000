-- A pmsLabel is AlipayHK's answer for one store. A proxy replaying a genuine SUCCESS to other
-- requests made stores `succeeded` with another store's label: a label believed for a second
-- store is a replay. From now on the ledger holds each believed label for one row only: the
-- writer keeps such an answer with its attempt as `not_this_request` and sends the row again
-- (store::record), and this index refuses any second holder.
--
-- A ledger written before may already hold a label in several rows. The first row that held it
-- keeps it (a replay comes after the answer it copies); the others were never confirmed: their
-- success is taken back, the attempt that brought the label becomes `not_this_request`, and the
-- row is pending again and possibly sent, so that the next run asks again (a store that is
-- circled after all answers STORE_IS_CIRCLED). The rows taken back are listed in a temporary
-- table for the program to show.

CREATE TEMP TABLE labels_taken_back (
    row INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    pms_label TEXT NOT NULL,
    source_file TEXT NOT NULL,
    source_line INTEGER NOT NULL,
    holder TEXT NOT NULL
);
INSERT INTO labels_taken_back (row, key, pms_label, source_file, source_line, holder)
SELECT row, key, pms_label, source_file, source_line, holder FROM (
    SELECT rowid AS row, key, pms_label, source_file, source_line,
        first_value(key) OVER held AS holder,
        row_number() OVER held AS n
    FROM rows
    WHERE pms_label IS NOT NULL AND label_unverified = 0
    WINDOW held AS (PARTITION BY pms_label ORDER BY updated_at, rowid)
)
WHERE n > 1;

UPDATE attempts SET outcome = 'not_this_request', maybe_processed = 1,
    error = 'not this request''s answer: its pmsLabel is held by an earlier store ('
        || (SELECT holder FROM labels_taken_back t WHERE t.key = attempts.key) || ')'
WHERE outcome = 'success'
  AND key IN (SELECT key FROM labels_taken_back)
  AND pms_label = (SELECT pms_label FROM labels_taken_back t WHERE t.key = attempts.key);

UPDATE rows SET state = 'pending', failure = NULL, maybe_sent = 1, pms_label = NULL,
    label_unverified = 0,
    result_message = 'NOT BELIEVED: its pmsLabel ' || pms_label || ' is held by an earlier store ('
        || (SELECT holder FROM labels_taken_back t WHERE t.row = rows.rowid)
        || '): a proxy may have replayed that answer; sent again by the next run',
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE rowid IN (SELECT row FROM labels_taken_back);

CREATE UNIQUE INDEX rows_by_believed_label ON rows (pms_label)
WHERE pms_label IS NOT NULL AND label_unverified = 0;
