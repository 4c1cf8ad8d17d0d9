#!/usr/bin/env python3
"""Holds SQLite's write lock as a busy application does: 60 ms write transactions, 5 ms apart,
for SECONDS (default 3), then exits.

usage: holder.py DB [SECONDS]
"""
import sqlite3
import sys
import time

path, seconds = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
conn = sqlite3.connect(path, isolation_level=None, timeout=30)
until = time.monotonic() + seconds
while time.monotonic() < until:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO telemetry_events (event) VALUES ('held')")
    time.sleep(0.06)
    conn.execute("COMMIT")
    time.sleep(0.005)
