-- The latency of an attempt in microseconds. An answer from a near gateway (or the sandbox)
-- takes less than a millisecond, and latency_ms, in whole milliseconds, holds 0 for all of them:
-- the report's median, p90 and p99 all read "0 ms". latency_ms stays as it is, for whoever reads
-- the ledger with plain SQL and for the attempts recorded before this column; the report reads
-- latency_us where it is set and latency_ms where it is not.
ALTER TABLE attempts ADD COLUMN latency_us INTEGER;
