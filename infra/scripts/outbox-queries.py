#!/usr/bin/env python3
"""Times one of the outbox relay's SQL queries (a `const` of shared/store/src/postgres/outbox.rs) as
written at a git revision and as written in the working tree, on a fresh database with a synthetic
backlog. Needs DATABASE_URL (run it under infra/scripts/with-services.sh) and a built runner
(target/debug/corebank-runner, for the migrations). Prints Postgres's own execution time, best of 3,
each inside a transaction that is rolled back, with JIT off as the bank's sessions have it.

    SERVICES=postgres infra/scripts/with-services.sh \\
        python3 infra/scripts/outbox-queries.py --query STATS --old HEAD~1 --streams 5 --per-stream 2000

--leased marks every stream's first row as leased (being published), so the rest of each stream waits.
"""

import argparse
import os
import re
import subprocess


def const(source: str, name: str) -> str:
    match = re.search(r'const %s: &str = "(.*?)";\n' % name, source, re.S)
    if not match:
        raise SystemExit(f"no const {name}")
    return re.sub(r"\s+", " ", match.group(1).replace("\\\n", "").replace('\\"', '"'))


def psql(url: str, sql: str) -> str:
    return subprocess.run(["psql", "-qAtX", url, "-c", sql], capture_output=True, text=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--query", default="STATS", help="the const to time (STATS, CLAIM, ...)")
    parser.add_argument("--old", default="HEAD", help="the git revision to compare with")
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--per-stream", type=int, default=500)
    parser.add_argument("--leased", action="store_true")
    args = parser.parse_args()

    path = "shared/store/src/postgres/outbox.rs"
    old = const(subprocess.check_output(["git", "show", f"{args.old}:{path}"], text=True), args.query)
    new = const(open(path, encoding="utf-8").read(), args.query)
    server = os.environ["DATABASE_URL"]
    name = "outbox_queries"
    psql(server, f"DROP DATABASE IF EXISTS {name}")
    psql(server, f"CREATE DATABASE {name}")
    db = server.rsplit("/", 1)[0] + "/" + name
    subprocess.run(["target/debug/corebank-runner", "migrate"], env=dict(os.environ, DATABASE_URL=db),
                   check=True, capture_output=True)
    s, per = args.streams, args.per_stream
    psql(db, f"INSERT INTO streams (stream_id, version) SELECT 'account-s' || s, {per} FROM generate_series(1, {s}) s")
    psql(db, "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, occurred_at, "
             "payload, metadata) SELECT 'account-s' || s, v, gen_random_uuid(), 'MoneyDeposited', 1, now(), "
             f"'{{}}', '{{}}' FROM generate_series(1, {per}) v, generate_series(1, {s}) s ORDER BY v, s")
    psql(db, "INSERT INTO outbox_events (position, stream_id, version) SELECT position, stream_id, version FROM events")
    if args.leased:
        psql(db, "UPDATE outbox_events SET claimed_until = now() + interval '1 hour' WHERE version = 1")
    psql(db, "ANALYZE")
    for label, sql in ((args.old, old), ("working tree", new)):
        sql = sql.replace("$1", "256").replace("$2::bigint", "60000::bigint").replace("$3", "gen_random_uuid()")
        times = []
        for _ in range(3):
            out = psql(db, f"BEGIN; SET LOCAL jit = off; EXPLAIN ANALYZE {sql}; ROLLBACK;")
            times.append(float(re.search(r"Execution Time: ([0-9.]+) ms", out).group(1)))
        print(f"{args.query} at {label}: {s * per} unpublished rows in {s} streams"
              f"{' (heads leased)' if args.leased else ''}: best of 3 {min(times):.1f} ms")


if __name__ == "__main__":
    main()
