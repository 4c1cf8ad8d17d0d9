#!/usr/bin/env python3
"""Drives bench/http: for each listener, a fresh copy of the store, `edgecron serve`, an export
started through its trigger, and while it runs, CLIENTS threads sending REQUESTS `GET /healthz`
each (a new connection per request, as the listener closes after each), with and without IDLE
connections held open. Prints one line per listener and idle count, samples pooled over RUNS
alternating rounds.

usage: http_load.py --store DB --rows N --listener NAME=BINARY[=DB] [--listener ...] [--runs N]
(a listener's own DB when its binary cannot open the other's schema)
"""
import argparse
import os
import select
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time

SECRET = "bench-secret"
CLIENTS, REQUESTS, IDLE = 50, 40, 300


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(port, method, path, headers=(), timeout=30.0):
    """One request on a new connection; answers (status or None, seconds)."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: 0\r\n"
            head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
            conn.sendall(head.encode())
            received = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
        status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.") else None
    except (OSError, ValueError, IndexError):
        status = None
    return status, time.monotonic() - started


class IdleConnections:
    """Holds `count` silent connections open, replacing any the server closes (the new listener
    closes a connection that sends no head within 10 s), until stopped."""

    def __init__(self, port, count):
        self.port, self.count = port, count
        self.sockets = [self._open() for _ in range(count)]
        self.stopping = threading.Event()
        self.replaced = 0
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()

    def _open(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def _hold(self):
        while not self.stopping.is_set():
            readable, _, _ = select.select(self.sockets, [], [], 0.1)
            for conn in readable:
                conn.close()
                self.sockets[self.sockets.index(conn)] = self._open()
                self.replaced += 1

    def close(self):
        self.stopping.set()
        self.thread.join()
        for conn in self.sockets:
            conn.close()


def scenario(binary, store, idle, rows):
    data = tempfile.mkdtemp(prefix="edgecron-bench-http-")
    shutil.copy(store, os.path.join(data, "edgecron.db"))
    port = free_port()
    env = dict(os.environ, EDGECRON_DATA_DIR=data, EDGECRON_LISTEN=f"127.0.0.1:{port}",
               CRON_SECRET=SECRET, EXPORT_BATCH_SIZE=str(rows), RUST_LOG="warn")
    server = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while request(port, "GET", "/healthz", timeout=1)[0] != 200:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"{binary} serve did not start: {server.stderr.read().decode()}")
            time.sleep(0.05)
        holder = IdleConnections(port, idle) if idle else None

        export = {}

        def trigger():
            export["status"], export["seconds"] = request(
                port, "POST", "/api/v1/cron/export-interactions",
                [("Authorization", f"Bearer {SECRET}")], timeout=600)

        exporter = threading.Thread(target=trigger)
        exporter.start()
        store_db = sqlite3.connect(os.path.join(data, "edgecron.db"), timeout=10)
        # The load starts once the export runs.
        while store_db.execute("SELECT COUNT(*) FROM job_runs WHERE job = 'export-interactions'").fetchone()[0] == 0:
            if not exporter.is_alive():
                raise SystemExit(f"the export trigger was answered {export.get('status')} before it ran")
            time.sleep(0.01)

        latencies, errors = [], []
        lock = threading.Lock()

        def client():
            for _ in range(REQUESTS):
                status, seconds = request(port, "GET", "/healthz")
                with lock:
                    latencies.append(seconds)
                    if status != 200:
                        errors.append(status)

        clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        overlapped = "status" not in export
        exporter.join()
        if holder:
            holder.close()
        exported = store_db.execute("SELECT COALESCE(SUM(row_count), 0) FROM export_files").fetchone()[0]
        store_db.close()
        if export.get("status") != 200 or exported != rows:
            raise SystemExit(f"the export failed: status {export.get('status')}, {exported} of {rows} rows")
        return {"latencies": latencies, "errors": len(errors), "export_seconds": export["seconds"],
                "overlapped": overlapped}
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def percentile(sorted_values, fraction):
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--listener", action="append", required=True, help="NAME=BINARY[=DB]")
    args = parser.parse_args()
    listeners = []
    for entry in args.listener:
        name, binary, *store = entry.split("=", 2)
        listeners.append((name, binary, store[0] if store else args.store))
    pooled = {}
    for round_number in range(args.runs):
        for idle in (0, IDLE):
            # Alternate the listeners within each round, so drift hits them alike.
            order = listeners if round_number % 2 == 0 else listeners[::-1]
            for name, binary, store in order:
                result = scenario(binary, store, idle, args.rows)
                entry = pooled.setdefault((name, idle), {"latencies": [], "errors": 0, "export": [], "overlapped": 0})
                entry["latencies"] += result["latencies"]
                entry["errors"] += result["errors"]
                entry["export"].append(result["export_seconds"])
                entry["overlapped"] += result["overlapped"]
                print(f"  round {round_number + 1}, {name}, {idle} idle: export {result['export_seconds']:.1f} s",
                      flush=True)

    print(f"\n{CLIENTS} clients x {REQUESTS} GET /healthz while export-interactions exports {args.rows:,} rows;"
          f" {args.runs} rounds pooled")
    print(f"{'listener':<26} {'idle':>5} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
          f" {'export s':>9} {'overlap':>8}")
    for name, _, _ in listeners:
        for idle in (0, IDLE):
            entry = pooled[(name, idle)]
            values = sorted(entry["latencies"])
            export = sorted(entry["export"])[len(entry["export"]) // 2]
            print(f"{name:<26} {idle:>5} {len(values):>9} {entry['errors']:>7}"
                  f" {percentile(values, 0.5) * 1000:>8.1f} {percentile(values, 0.99) * 1000:>8.1f}"
                  f" {values[-1] * 1000:>8.1f} {export:>9.1f} {entry['overlapped']:>4}/{args.runs}")
    print("overlap: rounds in which the export was still running when the last request was answered")


if __name__ == "__main__":
    main()
