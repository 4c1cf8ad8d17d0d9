#!/usr/bin/env python3
"""Runs a command and prints its wall time, CPU seconds and peak RSS as JSON.

usage: measure.py [ENV=VALUE ...] -- COMMAND ARGS...
"""
import json
import os
import subprocess
import sys
import time

separator = sys.argv.index("--")
env = dict(os.environ)
for assignment in sys.argv[1:separator]:
    name, value = assignment.split("=", 1)
    env[name] = value
started = time.monotonic()
child = subprocess.Popen(sys.argv[separator + 1:], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(child.pid, 0)
wall = time.monotonic() - started
stderr = child.stderr.read().decode(errors="replace")
if status != 0:
    sys.stderr.write(stderr)
    sys.exit(f"command failed with status {status}: {sys.argv[separator + 1:]}")
print(json.dumps({
    "wall_seconds": round(wall, 3),
    "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
    "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
}))
