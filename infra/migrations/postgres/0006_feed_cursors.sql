-- Where each tailing reader of the events feed got to (the embedded pipeline's lanes), so a restarted
-- runner resumes there instead of replaying the whole table. Everything at or below `position` has been
-- handled; a cursor only moves forward.
CREATE TABLE feed_cursors (
    lane       TEXT PRIMARY KEY,
    position   BIGINT NOT NULL CHECK (position >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
