-- Every new job is written twice more while it waits: its pending reason after the first
-- scheduling round, and its state when it starts. With full pages each such update moves
-- the row to another page and adds an entry to each of the table's six indexes. Leaving
-- room on each page lets an update that touches no indexed column (a new pending reason)
-- stay on the page without touching any index (a heap-only tuple update).
ALTER TABLE jobs SET (fillfactor = 70);
