-- rows_by_state indexed every row by its state, so each state change (pending → in_flight →
-- succeeded: two per attempt) moved an entry in it. No hot query needs the whole of it: the feeder
-- reads through rows_by_run. What does need a state is served by small partial indexes that hold
-- only the rows they are about.
DROP INDEX rows_by_state;

-- Recovery after a crash: WHERE state = 'in_flight' (at most --concurrency rows at a time).
CREATE INDEX rows_in_flight ON rows (key) WHERE state = 'in_flight';

-- The rows `report` lists for a person to look at, in sheet order.
CREATE INDEX rows_failed ON rows (source_file, source_line) WHERE state = 'failed';
CREATE INDEX rows_ambiguous ON rows (source_file, source_line) WHERE ambiguous = 1;
