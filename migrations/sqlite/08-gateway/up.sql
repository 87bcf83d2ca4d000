-- The gateway a ledger belongs to. Its rows say what was done there: a ledger filled against UAT
-- and then used against production would skip every row as done. The first run that uses the
-- ledger records the gateway (a ledger from before: the first run after this upgrade); a run,
-- `reconcile` or `export --annotate` against another gateway is refused (ledger::gateway).
CREATE TABLE gateway (
    -- one row at most
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    -- scheme://host:port/path, lower-cased host, explicit port, no trailing `/`;
    -- `sandbox` for the built-in sandbox of `run --sandbox` (a new port every time)
    endpoint    TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
