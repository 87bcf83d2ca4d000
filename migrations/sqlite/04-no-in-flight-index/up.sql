-- rows_in_flight (migration 02) held the rows in flight so that recovery could find them without
-- a scan. But every attempt put the row's key into it and took it out again, which added one
-- more page to nearly every commit of a run: about 1.5 % of the client's CPU per row in the
-- end-to-end benchmark. Recovery runs twice per run, at its start and its end, and its scan of
-- `rows` for state = 'in_flight' takes about 0.2 s on a ledger of a million rows, so the index
-- goes. (IF EXISTS: a ledger that someone tidied by hand may not have it.)
DROP INDEX IF EXISTS rows_in_flight;
