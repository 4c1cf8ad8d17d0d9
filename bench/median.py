#!/usr/bin/env python3
"""Reads measure.py results, one JSON object a line, and prints the run with the median wall time."""
import json
import sys

runs = sorted((json.loads(line) for line in sys.stdin if line.strip()), key=lambda run: run["wall_seconds"])
print(json.dumps(runs[len(runs) // 2]))
