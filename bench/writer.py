#!/usr/bin/env python3
"""The application's writer during a purge: inserts a row every 5 ms until told to stop (SIGTERM),
then prints the insert latencies (p50, p99, max in ms) as JSON.

usage: writer.py DB
"""
import json
import signal
import sqlite3
import sys
import time

running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("PRAGMA busy_timeout = 30000")
latencies = []
n = 0
next_at = time.monotonic()
while running:
    n += 1
    started = time.monotonic()
    conn.execute(
        "INSERT INTO interaction_history (id, tenant_id, customer_id, channel, outcome, payload, created_at) "
        "VALUES (?, 'live', 'c', 'email', 'opened', '{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        (f"live-{time.time_ns()}-{n}",),
    )
    latencies.append((time.monotonic() - started) * 1000)
    next_at += 0.005
    time.sleep(max(0.0, next_at - time.monotonic()))
latencies.sort()
pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None
print(json.dumps({"inserts": len(latencies), "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": round(latencies[-1], 2) if latencies else None}))
