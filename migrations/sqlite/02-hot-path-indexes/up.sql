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

-- attempts_by_key took one entry per attempt at a random place (keys do not follow the sheet's
-- order), so every commit wrote a whole index page per row for it. Nothing the program runs
-- looks attempts up by key (attempts_per_row groups them, through attempts_by_run or a scan),
-- and rows are never deleted, so the foreign key does not need it either.
DROP INDEX attempts_by_key;
