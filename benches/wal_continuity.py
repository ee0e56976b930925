#!/usr/bin/env python3
"""How often an application's WAL stays continuous across a 10-minute backup
interval under SQLite's default autocheckpoint (1,000 pages): the measurement
behind #30 part 3 (WAL-guided capture; docs/PERFORMANCE.md, "WAL-guided
capture (#30 part 3)").

A backup learns the pages changed since its parent from the WAL frames
appended since then only if the WAL was not restarted in between (same salts,
frames only appended). This runs a ~17 MiB table updated by an application at
several rates, in fast-forward (each "interval" is a number of transactions),
and counts the intervals across which the WAL header's checkpoint sequence
and salts did not change.

    benches/wal_continuity.py [INTERVALS]     (default 20; a few seconds)
"""
import os
import random
import sqlite3
import struct
import sys
import tempfile


def header(path):
    with open(path + "-wal", "rb") as f:
        h = f.read(32)
    # magic, version, page size, checkpoint sequence, salt-1, salt-2
    return struct.unpack(">IIIIII", h[:24])[3:] if len(h) >= 32 else None


def continuous(dir, rows, txns, rows_per_txn, intervals):
    p = os.path.join(dir, "db.db")
    for s in ("", "-wal", "-shm"):
        if os.path.exists(p + s):
            os.remove(p + s)
    c = sqlite3.connect(p, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    c.execute("BEGIN")
    c.executemany("INSERT INTO t VALUES (?, randomblob(1000))", [(i,) for i in range(rows)])
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("UPDATE t SET v = randomblob(1000) WHERE id = 0")
    kept = 0
    last = header(p)
    for _ in range(intervals):
        for _ in range(txns):
            c.execute("BEGIN")
            for _ in range(rows_per_txn):
                c.execute("UPDATE t SET v = randomblob(1000) WHERE id = ?", (random.randrange(rows),))
            c.execute("COMMIT")
        now = header(p)
        kept += now == last
        last = now
    c.close()
    return kept


def main():
    intervals = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(f"SQLite {sqlite3.sqlite_version}, default wal_autocheckpoint, {intervals} intervals")
    print("| application writes per 10 minutes | intervals with a continuous WAL |")
    print("|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for txns, per in [(6, 1), (60, 1), (60, 10), (600, 1), (6000, 1)]:
            k = continuous(d, 16000, txns, per, intervals)
            rate = f"{txns} transactions of {per} row{'s' if per > 1 else ''}"
            print(f"| {rate} | {k}/{intervals} |")


if __name__ == "__main__":
    main()
