-- A row's key joined its ids with `|`, so the ids ("M1", "S|2") and ("M1|S", "2") made one key:
-- two stores taken for one. The key is now written with `%` and `|` inside an id percent-escaped
-- (`%` as `%25`, `|` as `%7C`: input::write_key), so that no id can stand for a separator. Ids
-- holding neither character keep their key; the others are rewritten here from the ids stored in
-- the row, with the keys of their attempts and drift records.
--
-- A row whose merchant_id or store_id holds `|` may be two stores in one: the program refuses to
-- apply this migration while the ledger has one, naming them, until the operator has checked
-- those stores with AlipayHK and accepted the stored ids as the truth
-- (`pms-onboard ledger upgrade --accept-stored-ids`). Then they are rewritten like the rest.

PRAGMA defer_foreign_keys = ON;

-- The rows whose key changes, by rowid. The new key is the one input::write_key builds.
CREATE TEMP TABLE rewritten_keys (
    row INTEGER PRIMARY KEY,
    old TEXT NOT NULL UNIQUE,
    new TEXT NOT NULL
);
INSERT INTO rewritten_keys (row, old, new)
SELECT rowid, key, new FROM (
    SELECT rowid, key,
        CASE save_way_type
            WHEN 'MERCHANT_PMS' THEN 'MERCHANT_PMS'
                || '|' || replace(replace(partner_id, '%', '%25'), '|', '%7C')
                || '|' || replace(replace(merchant_id, '%', '%25'), '|', '%7C')
                || '|' || replace(replace(store_id, '%', '%25'), '|', '%7C')
            ELSE 'IPAY_TRADE_NO' || '|' || replace(replace(ipay_trade_no, '%', '%25'), '|', '%7C')
        END AS new
    FROM rows
    WHERE instr(partner_id, '%') OR instr(partner_id, '|') OR instr(merchant_id, '%')
       OR instr(merchant_id, '|') OR instr(store_id, '%') OR instr(store_id, '|')
       OR instr(ipay_trade_no, '%') OR instr(ipay_trade_no, '|')
)
WHERE new <> key;

-- Changing a row's key makes SQLite look up the attempts that refer to it, and attempts has no
-- index on key (migration 02): without this one, each rewritten row would scan every attempt.
-- Dropped again at the end.
CREATE INDEX attempts_by_key_for_migration_06 ON attempts (key);

UPDATE attempts SET key = (SELECT new FROM rewritten_keys WHERE old = attempts.key)
WHERE key IN (SELECT old FROM rewritten_keys);
UPDATE drift SET key = (SELECT new FROM rewritten_keys WHERE old = drift.key)
WHERE key IN (SELECT old FROM rewritten_keys);
-- In two steps: a new key may be the old key of another rewritten row (an id "M%7C" beside an id
-- "M|"), and a key is unique at every step. No key begins with a control character.
UPDATE rows SET key = char(1) || key WHERE rowid IN (SELECT row FROM rewritten_keys);
UPDATE rows SET key = (SELECT new FROM rewritten_keys WHERE row = rows.rowid)
WHERE rowid IN (SELECT row FROM rewritten_keys);

DROP INDEX attempts_by_key_for_migration_06;
