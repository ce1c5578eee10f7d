-- Placeholder: migration 013 is reserved for another branch (issue 9). It
-- only exists so that this branch's 014 applies (migrations have no gaps);
-- the real 013 replaces this file when the branches are merged.
SELECT 1;
