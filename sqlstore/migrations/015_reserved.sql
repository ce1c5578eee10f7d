-- Placeholder: migration 015 is reserved for another branch (the e2ee
-- fixes). It only exists so that this branch's 016 applies (migrations have
-- no gaps); the real 015 replaces this file when the branches are merged.
SELECT 1;
