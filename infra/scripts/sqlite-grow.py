#!/usr/bin/env python3
"""Grows a SQLite bank file written by the runner to a given number of events, for timing a restart
on a large file (docs/performance.md, "SQLite").

    infra/scripts/sqlite-grow.py DATA_DIR/corebank.sqlite3 3000000

Stop the runner first (the file serves one process at a time). Each round copies every account
stream of the original file under new ids (`<id>-c<round>`): its events, stream version, summary,
statement rows, checkpoint, snapshot, and the idempotency and transaction records that name it, so
the copies look like accounts the bank served. Transfer streams are not copied. Event payloads keep
naming the original accounts: the copies are for timing, not for reading back as money. At the end
every saved feed cursor is moved to the last position, as if the pipeline had projected everything
(the copies' read rows are copied too), so a restart resumes at the head.
"""

import sqlite3
import sys
import time


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, target = sys.argv[1], int(sys.argv[2])
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-262144")
    base = db.execute("SELECT count(*) FROM events WHERE stream_id LIKE 'account-%'").fetchone()[0]
    if base == 0:
        print("no account events to copy", file=sys.stderr)
        return 1
    started = time.monotonic()
    n = 0
    while db.execute("SELECT count(*) FROM events").fetchone()[0] < target:
        n += 1
        sfx = f"-c{n}"
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO streams SELECT stream_id || ?1, version FROM streams "
            "WHERE stream_id LIKE 'account-%' AND stream_id NOT LIKE '%-c%'",
            (sfx,),
        )
        db.execute(
            "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, occurred_at, "
            "payload, metadata) SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-7' || "
            "substr(hex(randomblob(2)), 2) || '-8' || substr(hex(randomblob(2)), 2) || '-' || "
            "hex(randomblob(6))), stream_id || ?1, version, event_type, schema_version, occurred_at, "
            "payload, metadata FROM events WHERE stream_id LIKE 'account-%' AND stream_id NOT LIKE '%-c%' "
            "ORDER BY position",
            (sfx,),
        )
        for table, key in (("projection_checkpoints", "stream_id"), ("snapshots", "stream_id")):
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            rest = ", ".join(c for c in cols if c != key)
            db.execute(
                f"INSERT INTO {table} ({key}, {rest}) SELECT {key} || ?1, {rest} FROM {table} "
                f"WHERE {key} LIKE 'account-%' AND {key} NOT LIKE '%-c%'",
                (sfx,),
            )
        for table, key in (("account_summary", "account_id"), ("account_statement", "account_id")):
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            rest = ", ".join(c for c in cols if c != key)
            db.execute(
                f"INSERT INTO {table} ({key}, {rest}) SELECT {key} || ?1, {rest} FROM {table} "
                f"WHERE {key} NOT LIKE '%-c%'",
                (sfx,),
            )
        cols = [r[1] for r in db.execute("PRAGMA table_info(transaction_records)")]
        rest = ", ".join(c for c in cols if c != "transaction_id")
        db.execute(
            f"INSERT INTO transaction_records (transaction_id, {rest}) SELECT transaction_id || ?1, {rest} "
            "FROM transaction_records WHERE transaction_id NOT LIKE '%-c%'",
            (sfx,),
        )
        cols = [r[1] for r in db.execute("PRAGMA table_info(idempotency_records)")]
        rest = ", ".join(c for c in cols if c not in ("scope", "key"))
        db.execute(
            f"INSERT INTO idempotency_records (scope, key, {rest}) SELECT scope, key || ?1, {rest} "
            "FROM idempotency_records WHERE key NOT LIKE '%-c%' AND state = 'completed'",
            (sfx,),
        )
        db.execute("COMMIT")
        total = db.execute("SELECT count(*) FROM events").fetchone()[0]
        print(f"round {n}: {total:,} events, {time.monotonic() - started:.0f} s", file=sys.stderr)
    head = db.execute("SELECT max(position) FROM events").fetchone()[0]
    db.execute("UPDATE feed_cursors SET position = ?1", (head,))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = db.execute("SELECT count(*) FROM events").fetchone()[0]
    print(f"{total:,} events, head {head:,}, feed cursors at the head", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
