-- Every answer that arrived is kept with its attempt, verified or not, and what each attempt
-- sent, so that a label AlipayHK sent is never lost and a store circled by a request whose outcome
-- was unknown is judged against what that request carried.

-- What the attempt sent (copied from the row when it was marked in flight).
ALTER TABLE attempts ADD COLUMN sent_merchant_name TEXT;
ALTER TABLE attempts ADD COLUMN sent_store_name TEXT;
ALTER TABLE attempts ADD COLUMN sent_mall_group_label TEXT;
ALTER TABLE attempts ADD COLUMN sent_mall_label TEXT;
-- 1 when the gateway may have acted on it (unknown outcome, unverified answer, lost in a crash)
ALTER TABLE attempts ADD COLUMN maybe_processed INTEGER NOT NULL DEFAULT 0;
-- What the answer said, as it said it: the label, whether its signature verified (1), did not
-- (0), or no JSON answer came (NULL), the raw body, and AlipayHK's Tracer-Id for support.
ALTER TABLE attempts ADD COLUMN pms_label TEXT;
ALTER TABLE attempts ADD COLUMN verified INTEGER;
ALTER TABLE attempts ADD COLUMN response_body BLOB;
ALTER TABLE attempts ADD COLUMN tracer_id TEXT;
-- For an answer that did not verify: what is needed to verify it again with another key.
ALTER TABLE attempts ADD COLUMN response_time TEXT;
ALTER TABLE attempts ADD COLUMN response_signature TEXT;
-- The latency in microseconds. An answer from a near gateway (or the sandbox) takes less than a
-- millisecond, and latency_ms, in whole milliseconds, holds 0 for all of them: the report's
-- percentiles read "0 ms". latency_ms stays, for plain SQL and for attempts recorded before this
-- column; the report reads latency_us where it is set.
ALTER TABLE attempts ADD COLUMN latency_us INTEGER;

-- The answers kept unverified, looked up when a run starts (few, or none).
CREATE INDEX attempts_unverified ON attempts (key) WHERE verified = 0;

-- The last attempt's Tracer-Id; a label from an answer that did not verify (1); the first
-- attempt of the row whose outcome was unknown (what AlipayHK most likely acted on).
ALTER TABLE rows ADD COLUMN tracer_id TEXT;
ALTER TABLE rows ADD COLUMN label_unverified INTEGER NOT NULL DEFAULT 0;
-- 1 while the row's last answer could not be verified (with a label or not): such rows are sent
-- after the others, and their answers verified again first.
ALTER TABLE rows ADD COLUMN answer_unverified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rows ADD COLUMN first_maybe_sent_attempt INTEGER;

-- What a run did, beside what it planned (to_send).
ALTER TABLE runs ADD COLUMN sent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN unverified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
