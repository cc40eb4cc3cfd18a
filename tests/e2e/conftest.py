"""End-to-end fixtures: the real `llm-keyproxy` binary in front of the TLS `mock-upstream`.

The mock runs with `--key <CANARY>`, so a proxied request only succeeds when the proxy injected
the real key (the clients only ever send a placeholder). Every process writes its stdout and
stderr to `target/test-logs/e2e-*.log`; at the end of the session those files must not contain
the canary or any recognisable part of it.

Run standalone with `.venv/bin/python -m pytest -q tests/e2e` after `cargo build --workspace`
(or use `scripts/test.sh`, which does both).
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
if not TARGET_DIR.is_absolute():
    TARGET_DIR = REPO / TARGET_DIR
BIN_DIR = TARGET_DIR / "debug"
PROXY_BIN = BIN_DIR / "llm-keyproxy"
MOCK_BIN = BIN_DIR / "mock-upstream"
LOG_DIR = REPO / "target" / "test-logs"

# The real key. Built from parts so that no single source line (which pytest may print in a
# traceback) holds it whole; the pieces searched for in the logs are CANARY_MARKERS.
CANARY = "sk-" + "KPCANARY" + "0a1b2c3d" + "4e5f6789"
CANARY_MARKERS = ("KPCANARY", "4e5f" + "6789")
PLACEHOLDER_KEY = "sk-placeholder-for-api-proxy"

CHUNKS = 5
EXPECTED_TEXT = "".join(f"Hello from mock chunk {i}. " for i in range(CHUNKS))

READY_TIMEOUT = 10.0

# Figures measured by the tests, printed in the terminal summary (name -> text).
FIGURES: dict[str, str] = {}


def record_figure(name: str, text: str) -> None:
    FIGURES[name] = text


# ---------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_path(name: str) -> Path:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:120]
    return LOG_DIR / f"e2e-{safe}.log"


_log_seq = itertools.count(1)


class Proc:
    """A child process whose stdout and stderr both go to one log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        self.name = name
        self.log = log_path(name)
        full_env = dict(os.environ)
        # Never let a developer's real proxy settings or keys leak into the children.
        for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy", "NO_PROXY", "no_proxy", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                    "KP_UNSET"):
            full_env.pop(var, None)
        full_env.update(env or {})
        self._logf = open(self.log, "ab")
        # Only the program name is written: the argument list may hold the canary.
        self._logf.write(f"### {name}: {Path(argv[0]).name}\n".encode())
        self._logf.flush()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
        )
        self.pid = self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def log_text(self) -> str:
        self._logf.flush()
        return self.log.read_text(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 5 s; returns the exit code."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._logf.close()
        return self.popen.returncode


def ensure_binaries() -> None:
    if PROXY_BIN.exists() and MOCK_BIN.exists():
        return
    subprocess.run(["cargo", "build", "--workspace"], cwd=REPO, check=True)


def http_get(port: int, path: str, timeout: float = 2.0, headers: dict | None = None):
    """(status, headers dict lower-cased, body bytes) of a GET to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def wait_port(port: int, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.poll()}:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# ---------------------------------------------------------------------------------------------
# mock upstream


@dataclass
class Mock:
    proc: Proc
    port: int
    ca_file: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_mock(tmp: Path, name: str = "mock") -> Mock:
    ensure_binaries()
    port = free_port()
    ca = tmp / "mock-ca.pem"
    proc = Proc(
        name,
        [str(MOCK_BIN), "--listen", f"127.0.0.1:{port}", "--ca-out", str(ca), "--key", CANARY],
    )
    wait_port(port, READY_TIMEOUT, proc)
    deadline = time.monotonic() + READY_TIMEOUT
    while not (ca.exists() and ca.stat().st_size > 0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"mock wrote no CA file:\n{proc.log_tail()}")
        time.sleep(0.05)
    return Mock(proc=proc, port=port, ca_file=ca)


# ---------------------------------------------------------------------------------------------
# proxy


PROVIDERS = ("openai", "anthropic", "unset", "unset-anthropic")


@dataclass
class Proxy:
    proc: Proc | None
    config: Path
    admin: int
    ports: dict[str, int]
    # Never in a repr: pytest prints fixtures in a failing test's traceback.
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def openai(self) -> int:
        return self.ports["openai"]

    @property
    def anthropic(self) -> int:
        return self.ports["anthropic"]

    @property
    def unset(self) -> int:
        return self.ports["unset"]

    def url(self, provider: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[provider]}{path}"

    def ready_status(self) -> int | None:
        try:
            return http_get(self.admin, "/ready", timeout=1.0)[0]
        except OSError:
            return None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Polls /ready until 200; returns the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"proxy exited with {self.proc.poll()} before /ready:\n{self.proc.log_tail()}"
                )
            if self.ready_status() == 200:
                return time.monotonic() - start
            time.sleep(0.05)
        tail = self.proc.log_tail() if self.proc else ""
        raise RuntimeError(f"proxy /ready not 200 within {timeout}s:\n{tail}")


def proxy_env() -> dict[str, str]:
    return {"OPENAI_API_KEY": CANARY, "ANTHROPIC_API_KEY": CANARY}


def write_proxy_config(
    path: Path,
    mock: Mock,
    limits: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
    admin: int | None = None,
) -> Proxy:
    """Writes a config with the openai / anthropic presets dialing the mock, plus two providers
    whose key variable is unset; returns the (not yet started) Proxy description."""
    admin = admin or free_port()
    ports = dict(ports or {})
    for name in PROVIDERS:
        ports.setdefault(name, free_port())
    lines = [
        "# written by tests/e2e/conftest.py",
        "admin:",
        f"  listen: 127.0.0.1:{admin}",
        "tls:",
        "  roots: [webpki]",
        f"  extra_ca_file: {mock.ca_file}",
    ]
    if limits:
        lines.append("limits:")
        lines += [f"  {k}: {v}" for k, v in limits.items()]
    lines += [
        "providers:",
        "  openai:",
        f"    listen: 127.0.0.1:{ports['openai']}",
        "    api_key: env:OPENAI_API_KEY",
        f"    upstream_address: {mock.address}",
        "  anthropic:",
        f"    listen: 127.0.0.1:{ports['anthropic']}",
        "    api_key: env:ANTHROPIC_API_KEY",
        f"    upstream_address: {mock.address}",
        "  unset:",
        "    preset: openai",
        f"    listen: 127.0.0.1:{ports['unset']}",
        "    api_key: env:KP_UNSET",
        f"    upstream_address: {mock.address}",
        "  unset-anthropic:",
        "    preset: anthropic",
        f"    listen: 127.0.0.1:{ports['unset-anthropic']}",
        "    api_key: env:KP_UNSET",
        f"    upstream_address: {mock.address}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return Proxy(proc=None, config=path, admin=admin, ports=ports, env=proxy_env())


def start_proxy(
    tmp: Path,
    mock: Mock,
    name: str,
    limits: dict[str, str] | None = None,
    wait: bool = True,
) -> Proxy:
    ensure_binaries()
    tmp.mkdir(parents=True, exist_ok=True)
    proxy = write_proxy_config(tmp / f"{name}.yaml", mock, limits=limits)
    proxy.proc = Proc(
        name,
        [str(PROXY_BIN), "--config", str(proxy.config), "--log-format", "json"],
        env=proxy.env,
    )
    if wait:
        try:
            proxy.wait_ready()
        except Exception:
            proxy.proc.stop()
            raise
    return proxy


def run_proxy_cli(name: str, args: list[str], env: dict[str, str] | None = None,
                  timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Runs the proxy to completion; its output is returned and also written to a log file."""
    ensure_binaries()
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "KP_UNSET", "HTTPS_PROXY",
                             "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")}
    full_env.update(env or {})
    res = subprocess.run([str(PROXY_BIN), *args], capture_output=True, text=True, env=full_env,
                         cwd=REPO, timeout=timeout, stdin=subprocess.DEVNULL)
    with open(log_path(name), "a") as f:
        f.write(f"### {name}: llm-keyproxy {' '.join(args)} -> exit {res.returncode}\n")
        f.write("--- stdout\n" + res.stdout + "--- stderr\n" + res.stderr)
    return res


# ---------------------------------------------------------------------------------------------
# a raw HTTP/1.1 client that sees exactly how a response body ends


class RawResponse:
    """One HTTP/1.1 request on its own socket. `events()` yields (recv_time_ns, chunk bytes) as
    each piece of the body arrives; afterwards `clean_end` says whether the body ended properly
    (terminal chunk / full content-length) and `error` holds how it was cut otherwise."""

    def __init__(self, port: int, path: str, method: str = "GET", headers: dict | None = None,
                 timeout: float = 15.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        hdrs = {"Host": f"127.0.0.1:{port}", "Accept": "text/event-stream",
                "Connection": "close"}
        hdrs.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        self.sock.sendall((head + "\r\n").encode())
        self.buf = b""
        self.clean_end = False
        self.error: str | None = None
        self.body = b""
        self._read_head()

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        return data

    def _read_head(self) -> None:
        while b"\r\n\r\n" not in self.buf:
            data = self._recv()
            if not data:
                raise ConnectionError(f"connection closed before response head: {self.buf!r}")
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()

    def _fill(self) -> bool:
        try:
            data = self._recv()
        except (ConnectionResetError, socket.timeout) as e:
            self.error = type(e).__name__
            return False
        if not data:
            return False
        self.buf += data
        return True

    def events(self):
        """Yields (recv_time_ns, bytes) for each body piece as it is decoded."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            yield from self._chunked()
        elif "content-length" in self.headers:
            remaining = int(self.headers["content-length"])
            while remaining > 0:
                if not self.buf and not self._fill():
                    self.error = self.error or "eof before content-length"
                    return
                piece, self.buf = self.buf[:remaining], self.buf[remaining:]
                remaining -= len(piece)
                self.body += piece
                yield time.time_ns(), piece
            self.clean_end = True
        else:
            while True:
                if self.buf:
                    piece, self.buf = self.buf, b""
                    self.body += piece
                    yield time.time_ns(), piece
                if not self._fill():
                    # close-delimited: EOF is the only end there is
                    self.clean_end = self.error is None
                    return

    def _chunked(self):
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill():
                    self.error = self.error or "eof inside chunked body"
                    return
            size_line, rest = self.buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0].strip(), 16)
            self.buf = rest
            if size == 0:
                self.clean_end = True
                return
            while len(self.buf) < size + 2:
                if not self._fill():
                    self.error = self.error or "eof inside a chunk"
                    return
            piece, self.buf = self.buf[:size], self.buf[size + 2:]
            self.body += piece
            yield time.time_ns(), piece

    def sse_events(self):
        """Yields (recv_time_ns, parsed data JSON) for each complete SSE event."""
        pending = b""
        for t, piece in self.events():
            pending += piece
            while b"\n\n" in pending:
                ev, pending = pending.split(b"\n\n", 1)
                for line in ev.split(b"\n"):
                    if line.startswith(b"data:"):
                        yield t, json.loads(line[5:].strip())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("keyproxy-e2e")


@pytest.fixture(scope="session")
def mock(session_tmp) -> Mock:
    m = start_mock(session_tmp)
    yield m
    m.proc.stop()


@pytest.fixture(scope="session")
def proxy(session_tmp, mock) -> Proxy:
    p = start_proxy(session_tmp, mock, "proxy")
    yield p
    p.proc.stop()


@pytest.fixture
def spawn_proxy(tmp_path, mock, request):
    """Factory: `spawn_proxy(limits={...})` starts one more proxy for this test (stopped at
    teardown unless the test already did)."""
    started: list[Proxy] = []

    def spawn(limits: dict[str, str] | None = None, wait: bool = True) -> Proxy:
        name = f"proxy-{request.node.name}-{next(_log_seq)}"
        p = start_proxy(tmp_path, mock, name, limits=limits, wait=wait)
        started.append(p)
        return p

    yield spawn
    for p in started:
        p.proc.stop()


# ---------------------------------------------------------------------------------------------
# canary check and figures


def canary_hits() -> list[str]:
    hits = []
    if not LOG_DIR.exists():
        return hits
    for f in sorted(LOG_DIR.glob("e2e-*.log")):
        data = f.read_bytes()
        if any(m.encode() in data for m in CANARY_MARKERS):
            hits.append(str(f))
    return hits


def pytest_sessionfinish(session, exitstatus):
    # Runs after every fixture is torn down, so the processes' last log lines are included.
    hits = canary_hits()
    if hits:
        print("\nCANARY LEAK: the injected key (or a piece of it) appears in: " + ", ".join(hits))
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("measured figures")
        for name, text in FIGURES.items():
            terminalreporter.write_line(f"{name}: {text}")
