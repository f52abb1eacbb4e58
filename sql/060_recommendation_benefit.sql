-- The read time an index saves, in the unit of its write cost: ms of database time per second of wall clock.
-- The build-time write guard compares the two on a write-heavy table (indexd/lifecycle/guards.py check_write).
--
-- benefit_ms_per_s: the advisor's figure next to write_overhead (both ms/s). NULL for advice saved before this
--                   column existed: the write guard refuses such a row on a write-heavy table until the next
--                   advice run (`indexd recommend`) refreshes it.

ALTER TABLE recommendations
    ADD COLUMN benefit_ms_per_s double precision;
