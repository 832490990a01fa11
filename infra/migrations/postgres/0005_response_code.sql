-- 0005: the stable error code of a stored rejection, beside its status and body.
--
-- Released migrations are never edited; change the schema with a new numbered file. The columns are
-- nullable, so a build that only knows 0004 keeps writing (it leaves them NULL).
--
-- response_code is the rejection's code (the body's top-level `code`), NULL for an acceptance. A row
-- whose status is not 2xx and whose response_code is NULL (written by an older build, or a body this
-- backfill could not read) reads back as code 'UNKNOWN', so it is never mistaken for a success.
ALTER TABLE idempotency_records ADD COLUMN response_code TEXT;
ALTER TABLE transaction_records ADD COLUMN response_code TEXT;

-- The backfill reads the code from the stored body. A body that is not JSON must not fail the
-- migration, so the cast runs in a function that answers NULL for it.
CREATE FUNCTION pg_temp.response_code_of(body TEXT) RETURNS TEXT LANGUAGE plpgsql AS $$
BEGIN
    RETURN body::jsonb ->> 'code';
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

UPDATE idempotency_records SET response_code = pg_temp.response_code_of(response_body)
WHERE state = 'completed' AND response_status NOT BETWEEN 200 AND 299;

UPDATE transaction_records SET response_code = pg_temp.response_code_of(response_body)
WHERE response_status NOT BETWEEN 200 AND 299;

DROP FUNCTION pg_temp.response_code_of(TEXT);
