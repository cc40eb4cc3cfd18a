#!/usr/bin/env python3
"""Runs a built llm-keyproxy binary the way the image does and measures it.

  - start-to-ready: from spawning the process to the admin /ready answering 200 (median of
    N starts), with the five AWF providers on free loopback ports;
  - idle RSS: VmRSS one second after ready, no traffic;
  - SIGTERM: the process exits 0 promptly (nothing in flight: no drain to wait for);
  - PID 1: started as PID 1 of a new PID namespace (`unshare --pid --fork`, like a
    container), where the kernel delivers SIGTERM only to a process that handles it: it must
    still stop on SIGTERM by itself. Skipped with a message when unshare is not permitted.

Usage: measure.py BINARY [STARTS]     exit 0, or 1 naming what failed
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PROVIDERS = ["openai", "anthropic", "copilot", "gemini", "vertex"]


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def write_config(directory):
    ports = free_ports(len(PROVIDERS) + 1)
    lines = [
        f"admin: {{listen: 127.0.0.1:{ports[0]}}}",
        "tls: {roots: [webpki]}",
        "limits: {drain_timeout: 8s}",
        "providers:",
    ]
    for name, port in zip(PROVIDERS, ports[1:]):
        lines.append(f"  {name}: {{listen: 127.0.0.1:{port}, api_key: env:KP_MEASURE_KEY}}")
    path = os.path.join(directory, "measure.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path, ports[0]


def ready_status(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
            return head.split(b" ")[1].decode() if head.startswith(b"HTTP/") else None
    except OSError:
        return None


def wait_ready(proc, port, limit=10.0):
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if proc.poll() is not None:
            raise SystemExit(f"the proxy exited with {proc.returncode} before /ready")
        if ready_status(port) == "200":
            return time.perf_counter()
        time.sleep(0.0005)
    raise SystemExit(f"/ready did not answer 200 within {limit}s")


def env():
    # No proxy variables and a fake key: nothing leaves the machine.
    return {"KP_MEASURE_KEY": "kp-measure-not-a-key", "PATH": os.environ.get("PATH", "")}


def stop(proc, pid=None, limit=5.0):
    t0 = time.perf_counter()
    os.kill(pid or proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"SIGTERM did not stop the proxy within {limit}s")
    return code, (time.perf_counter() - t0) * 1000


def child_of(pid, limit=5.0):
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.001)
    return None


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(argv[1])
    starts = int(argv[2]) if len(argv) == 3 else 20
    failures = []
    with tempfile.TemporaryDirectory() as d:
        config, admin = write_config(d)
        cmd = [binary, "--config", config]
        times, exits, rss = [], [], None
        for i in range(starts):
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            t_ready = wait_ready(proc, admin)
            times.append((t_ready - t0) * 1000)
            if i == 0:
                time.sleep(1.0)
                with open(f"/proc/{proc.pid}/status", encoding="ascii") as f:
                    status = dict(line.split(":", 1) for line in f if ":" in line)
                rss = int(status["VmRSS"].split()[0])
            code, ms = stop(proc)
            exits.append(ms)
            if code != 0:
                failures.append(f"start {i}: exit {code} after SIGTERM: {proc.stderr.read().decode()[-300:]}")
            proc.stderr.close()
        print(
            f"start-to-ready: median {statistics.median(times):.1f} ms over {starts} starts "
            f"(min {min(times):.1f}, max {max(times):.1f}; five providers + admin)"
        )
        print(f"idle RSS: {rss / 1024:.1f} MiB ({rss} kB) one second after ready")
        print(f"SIGTERM to exit: median {statistics.median(exits):.1f} ms, every exit code 0: {not failures}")

        # PID 1 of its own PID namespace, as in a container.
        try:
            proc = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--kill-child", *cmd],
                env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except FileNotFoundError:
            print("SKIP PID 1 check: unshare is not installed")
            proc = None
        if proc is not None:
            child = child_of(proc.pid)
            time.sleep(0.05)
            if child is None or proc.poll() is not None:
                err = proc.stderr.read().decode().strip() if proc.poll() is not None else ""
                print(f"SKIP PID 1 check: cannot start in a new PID namespace ({err or 'no child'})")
                if proc.poll() is None:
                    proc.kill()
            else:
                with open(f"/proc/{child}/status", encoding="ascii") as f:
                    nspid = [l.split()[1:] for l in f if l.startswith("NSpid:")][0]
                if nspid[-1] != "1":
                    failures.append(f"not PID 1 in its namespace: NSpid {nspid}")
                wait_ready(proc, admin)
                code, ms = stop(proc, pid=child)
                out = proc.stdout.read().decode()
                if code != 0:
                    failures.append(f"as PID 1: exit {code} after SIGTERM")
                if '"phase":"done"' not in out:
                    failures.append("as PID 1: no shutdown log line after SIGTERM")
                print(f"as PID 1 (NSpid {' '.join(nspid)}): SIGTERM handled, exit {code} in {ms:.1f} ms")
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
