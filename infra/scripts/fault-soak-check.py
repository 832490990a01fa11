#!/usr/bin/env python3
"""The checks fault-soak.sh makes after the load tool's audit, against the runner's API.

  fault-soak-check.py BASE_URL IDS_JSON POISON_JSONL

BASE_URL is the API root (http://127.0.0.1:PORT/api), IDS_JSON what `corebank-loadtest --ids` wrote,
POISON_JSONL the records kafka-inject.py poison printed. ADMIN_TOKEN from the environment. Prints one
JSON document: every transfer's status (terminal or not), every account's held amount, the parked
records against the injected poison, and health. Exit 0 when every check holds.
"""
import json
import os
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

BASE, IDS, POISON = sys.argv[1], sys.argv[2], sys.argv[3]
TOKEN = os.environ["ADMIN_TOKEN"]


def get(path, admin=False):
    req = urllib.request.Request(BASE + path)
    if admin:
        req.add_header("x-admin-token", TOKEN)
    for _ in range(5):
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body or b"null")
            except ValueError:
                return e.code, None
        except OSError:
            continue
    return None, None


def transfer(t):
    status, body = get("/transfers/" + t["id"])
    if status == 200:
        return t, body.get("status")
    if status == 404 and not t["accepted"]:
        return t, "NEVER_CREATED"
    return t, "HTTP_%s" % status


def account(a):
    status, body = get("/accounts/%s/balance" % a)
    if status != 200:
        return a, None, None
    balance = int(body["balanceMinorUnits"])
    held = balance - int(body["availableBalanceMinorUnits"])
    return a, balance, held


def main():
    ids = json.load(open(IDS))
    poison = [json.loads(line) for line in open(POISON) if line.strip()]
    with ThreadPoolExecutor(8) as pool:
        transfers = list(pool.map(transfer, ids["transfers"]))
        accounts = list(pool.map(account, ids["accounts"]))
    by_status = {}
    for _, s in transfers:
        by_status[s] = by_status.get(s, 0) + 1
    not_terminal = [t["id"] for t, s in transfers if s not in ("COMPLETED", "FAILED", "NEVER_CREATED")]
    unreadable = [a for a, b, _ in accounts if b is None]
    holds = [(a, h) for a, b, h in accounts if h]
    negative = [a for a, b, _ in accounts if b is not None and b < 0]

    status, parked = get("/admin/parked?limit=1000", admin=True)
    records = (parked or {}).get("records", []) if status == 200 else []
    injected = {"%s-%s@%s" % (p["topic"], p["partition"], p["offset"]) for p in poison}
    listed = {r.get("streamKey") for r in records}
    unexpected = [
        {"consumer": r.get("consumer"), "streamKey": r.get("streamKey"), "kind": r.get("kind"), "error": r.get("error")}
        for r in records
        if r.get("streamKey") not in injected or r.get("kind") != "UNDECODABLE"
    ]
    _, health = get("/health")
    checks = (health or {}).get("checks", {})
    result = {
        "transfers": {"total": len(transfers), "byStatus": by_status, "notTerminal": len(not_terminal),
                      "notTerminalSample": not_terminal[:10]},
        "accounts": {"total": len(accounts), "unreadable": len(unreadable), "withHolds": len(holds),
                     "heldMinorTotal": sum(h for _, h in holds), "holdsSample": holds[:10],
                     "negative": len(negative)},
        "parked": {"httpStatus": status, "records": len(records),
                   "byConsumer": {c: sum(1 for r in records if r.get("consumer") == c)
                                  for c in sorted({r.get("consumer") for r in records})},
                   "injected": sorted(injected), "listed": sorted(k for k in listed if k),
                   "missingInjected": sorted(injected - listed), "unexpected": unexpected[:10],
                   "unexpectedCount": len(unexpected)},
        "health": {"status": (health or {}).get("status"), "lag": checks.get("pipeline", {}).get("lag"),
                   "parkedCount": checks.get("parked", {}).get("count")},
    }
    result["pass"] = (
        not not_terminal and not unreadable and not holds and not negative and status == 200
        and not unexpected and injected and injected <= listed
        and result["health"]["lag"] == 0 and result["health"]["parkedCount"] == len(records)
    )
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
