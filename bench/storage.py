#!/usr/bin/env python3
"""s3-sync against an endless-500 endpoint and a healthy moto server, for each binary given.

usage: storage.py --rows N --work DIR --binary LABEL=PATH [--binary LABEL=PATH ...]
"""
import argparse
import http.server
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

STOP_AFTER = 20.0
CHUNK = b"x" * 65536


class Endless(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            length -= len(self.rfile.read(min(length, 65536)))
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        except OSError:
            pass

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = answer

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def storage_env(data_dir, endpoint):
    env = dict(os.environ, EDGECRON_DATA_DIR=data_dir, RUST_LOG="warn")
    env.update(S3_BUCKET="bench", S3_ENDPOINT=endpoint, S3_REGION="eu-test-1",
               S3_ACCESS_KEY_ID="test", S3_SECRET_ACCESS_KEY="test", S3_PATH_STYLE="true")
    return env


def prepared_store(binary, work, label, rows):
    """A data dir with `rows` demo rows exported to local files, none uploaded yet."""
    data_dir = os.path.join(work, label.replace(" ", "-").replace("(", "").replace(")", ""))
    os.makedirs(data_dir, exist_ok=True)
    env = dict(os.environ, EDGECRON_DATA_DIR=data_dir, RUST_LOG="warn")
    subprocess.run([binary, "demo", "--rows", str(rows)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    for _ in range(50):
        done = subprocess.run([binary, "run", "export-interactions"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if b'"totalExported":0' in done.stdout:
            break
    return data_dir


def timed_sync(binary, env, limit):
    """Wall seconds, peak RSS (MiB) and exit status of one s3-sync, stopped after `limit`."""
    started = time.monotonic()
    child = subprocess.Popen([binary, "run", "s3-sync"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stopper = threading.Timer(limit, lambda: child.send_signal(signal.SIGKILL))
    stopper.start()
    _, status, usage = os.wait4(child.pid, 0)
    stopper.cancel()
    wall = time.monotonic() - started
    ended = "killed" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
    return wall, usage.ru_maxrss / 1024, ended


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--work", required=True)
    parser.add_argument("--binary", action="append", required=True)
    args = parser.parse_args()
    binaries = [entry.split("=", 1) for entry in args.binary]

    endless = Server(("127.0.0.1", 0), Endless)
    threading.Thread(target=endless.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{endless.server_address[1]}"
    print(f"s3-sync of {args.rows} demo rows' files against an endless 500 body "
          f"(stopped after {STOP_AFTER:.0f} s)")
    print(f"{'binary':<24} {'wall s':>8} {'peak RSS MiB':>13}  ended")
    for label, binary in binaries:
        data_dir = prepared_store(binary, args.work, label, args.rows)
        wall, peak, ended = timed_sync(binary, storage_env(data_dir, endpoint), STOP_AFTER)
        print(f"{label:<24} {wall:>8.2f} {peak:>13.1f}  {ended}")

    moto_server = shutil.which("moto_server")
    if moto_server is None:
        print("moto_server not installed: healthy-storage figures skipped")
        return
    port = free_port()
    moto = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run(["curl", "-s", "-X", "PUT", f"http://127.0.0.1:{port}/bench"],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"\ns3-sync of the same files to a healthy moto server")
        print(f"{'binary':<24} {'files':>6} {'wall s':>8} {'files/s':>8} {'peak RSS MiB':>13}")
        for label, binary in binaries:
            data_dir = prepared_store(binary, args.work, label + " healthy", args.rows)
            files = len([name for _, _, names in os.walk(os.path.join(data_dir, "exports"))
                         for name in names])
            wall, peak, ended = timed_sync(binary, storage_env(data_dir, f"http://127.0.0.1:{port}"),
                                           600)
            print(f"{label:<24} {files:>6} {wall:>8.2f} {files / wall:>8.1f} {peak:>13.1f}  {ended}")
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    sys.exit(main())
