"""curl through the proxy: SSE events arrive as they are sent (no buffering), request ids."""

import os
import re
import select
import shutil
import subprocess
import time
import json

import pytest

from conftest import PLACEHOLDER_KEY, record_figure

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

EVENTS = 10
GAP_MS = 100
MAX_LAG_MS = 80
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def read_lines_timed(proc: subprocess.Popen, timeout: float):
    """Reads the child's stdout as it arrives; returns [(recv_time_ns, line bytes)]."""
    fd = proc.stdout.fileno()
    out, pending = [], b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        data = os.read(fd, 65536)
        now = time.time_ns()
        if not data:
            break
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            out.append((now, line))
    return out


def test_curl_sse_is_not_buffered(proxy):
    url = proxy.url("anthropic", f"/mock/sse?events={EVENTS}&gap_ms={GAP_MS}")
    proc = subprocess.Popen(["curl", "-sN", "--max-time", "20", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        lines = read_lines_timed(proc, timeout=20)
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    events = []
    for recv_ns, line in lines:
        if line.startswith(b"data:"):
            data = json.loads(line[5:].strip())
            events.append((recv_ns, data))
    assert [d["i"] for _, d in events] == list(range(EVENTS))
    lags_ms = [(recv - d["sent_ns"]) / 1e6 for recv, d in events]
    spread_ms = (events[-1][0] - events[0][0]) / 1e6
    record_figure(
        "curl SSE per-event lag (sent by mock -> read from curl's stdout)",
        f"max {max(lags_ms):.1f} ms, mean {sum(lags_ms) / len(lags_ms):.1f} ms "
        f"over {EVENTS} events {GAP_MS} ms apart; first-to-last spread {spread_ms:.0f} ms",
    )
    # spread over time: the first event is read long before the last one
    assert spread_ms >= (EVENTS - 1) * GAP_MS * 0.8, f"events bunched: spread {spread_ms:.0f} ms"
    for i, lag in enumerate(lags_ms):
        assert lag < MAX_LAG_MS, f"event {i} reached curl {lag:.1f} ms after it was sent"


def curl_head(url: str, *extra: str) -> tuple[int, dict[str, str], str]:
    res = subprocess.run(["curl", "-si", "--max-time", "10", *extra, url],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    head, _, body = res.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def test_curl_shows_request_id(proxy):
    status, headers, body = curl_head(proxy.url("openai", "/v1/models"),
                                      "-H", f"Authorization: Bearer {PLACEHOLDER_KEY}")
    assert status == 200, body
    assert UUID_RE.match(headers.get("x-request-id", "")), headers


def test_curl_client_request_id_is_kept(proxy):
    status, headers, _ = curl_head(proxy.url("anthropic", "/mock/echo"),
                                   "-H", "X-Request-ID: my-trace_01.abc")
    assert status == 200
    assert headers.get("x-request-id") == "my-trace_01.abc"


def test_curl_bad_client_request_id_is_replaced(proxy):
    status, headers, _ = curl_head(proxy.url("anthropic", "/mock/echo"),
                                   "-H", "X-Request-ID: has spaces/and{braces}")
    assert status == 200
    assert UUID_RE.match(headers.get("x-request-id", "")), headers


def test_curl_error_responses_carry_request_id(proxy):
    status, headers, body = curl_head(proxy.url("unset", "/v1/models"))
    assert status == 403
    assert UUID_RE.match(headers.get("x-request-id", "")), headers
    err = json.loads(body)["error"]
    assert err["type"] == "provider_not_configured"
    assert err["provider"] == "unset"
    assert err["retryable"] is False
    assert err["message"]
