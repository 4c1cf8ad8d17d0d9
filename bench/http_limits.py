#!/usr/bin/env python3
"""Drives the second half of bench/http: /healthz while idle clients flood past the connection
limit, and while 50 clients scrape /metrics of a large store, for each listener given. Prints
probes, failures and p50/p99/max latency per listener and scenario.

usage: http_limits.py --store DB --listener NAME=BINARY[=DB] [--listener ...] [--seconds N]
"""
import argparse
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from http_load import free_port, percentile, request

FLOOD, FLOOD_THREADS, SCRAPERS, PROBE_TIMEOUT = 1100, 4, 50, 5.0


def serve(binary, store):
    data = tempfile.mkdtemp(prefix="edgecron-bench-limits-")
    shutil.copy(store, os.path.join(data, "edgecron.db"))
    port = free_port()
    env = dict(os.environ, EDGECRON_DATA_DIR=data, EDGECRON_LISTEN=f"127.0.0.1:{port}",
               CRON_SECRET="bench-secret", RUST_LOG="error")
    server = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while request(port, "GET", "/healthz", timeout=1)[0] != 200:
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"{binary} serve did not start")
        time.sleep(0.05)
    return server, port, data


def flood(port, stop):
    """Holds FLOOD / FLOOD_THREADS idle connections, opening new ones as old ones close."""
    held = []
    while not stop.is_set():
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
        except OSError:
            time.sleep(0.01)
        if len(held) > FLOOD // FLOOD_THREADS:
            held.pop(0).close()
        time.sleep(0.002)
    for conn in held:
        conn.close()


def scrape(port, stop, counts):
    while not stop.is_set():
        status, _ = request(port, "GET", "/metrics", timeout=30)
        counts.append(status)


def probes(port, seconds):
    latencies, failures = [], 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        status, took = request(port, "GET", "/healthz", timeout=PROBE_TIMEOUT)
        latencies.append(took)
        failures += status != 200
        time.sleep(0.1)
    return sorted(latencies), failures


def scenario(binary, store, kind, seconds):
    server, port, data = serve(binary, store)
    stop, scrapes = threading.Event(), []
    if kind == "idle flood":
        load = [threading.Thread(target=flood, args=(port, stop)) for _ in range(FLOOD_THREADS)]
    else:
        load = [threading.Thread(target=scrape, args=(port, stop, scrapes)) for _ in range(SCRAPERS)]
    try:
        for thread in load:
            thread.start()
        time.sleep(1.0)
        latencies, failures = probes(port, seconds)
    finally:
        stop.set()
        for thread in load:
            thread.join()
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)
    return latencies, failures, len(scrapes)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--listener", action="append", required=True, help="NAME=BINARY[=DB]")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"\n/healthz probed every 100 ms for {args.seconds:.0f} s (timeout {PROBE_TIMEOUT:.0f} s):"
          f" under {FLOOD:,} idle connections re-opened as they close (limit 1,024), and under"
          f" {SCRAPERS} clients scraping /metrics")
    print(f"{'listener':<26} {'scenario':<12} {'probes':>7} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'max ms':>8} {'scrapes':>8}")
    for kind in ("idle flood", "scrapers"):
        for entry in args.listener:
            name, binary, *store = entry.split("=", 2)
            latencies, failures, scrapes = scenario(binary, store[0] if store else args.store,
                                                    kind, args.seconds)
            print(f"{name:<26} {kind:<12} {len(latencies):>7} {failures:>7}"
                  f" {percentile(latencies, 0.5) * 1000:>8.1f} {percentile(latencies, 0.99) * 1000:>8.1f}"
                  f" {latencies[-1] * 1000:>8.1f} {scrapes if kind == 'scrapers' else '':>8}", flush=True)


if __name__ == "__main__":
    main()
