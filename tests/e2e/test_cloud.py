"""Bedrock through the real binary: every request the proxy signs verifies with botocore (an
independent SigV4 implementation) against exactly what the mock received, for static keys and
for credentials obtained keyless (GitHub OIDC token -> AWS STS); a body changed after signing
does not verify. The secrets handed to the proxy carry the canary markers, so test_zz_canary
checks none of them reached a log."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time

from conftest import CANARY_MARKERS, PROXY_BIN, Proc, ensure_binaries, free_port, http_get
from sigv4_check import verify

AWS_ID = "AKIAKPCANARY00000002"
AWS_SECRET = "wJalrKPCANARY0a1b2c3d4e5f6789/EXAMPLEKEY"
MODEL = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"
BODY = json.dumps({
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "x" * (100 * 1024)}],
}).encode()


def _mock(mock, method: str, path: str):
    ctx = ssl.create_default_context(cafile=str(mock.ca_file))
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", mock.port, context=ctx, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return json.loads(resp.read())
    finally:
        conn.close()


def _proxy(tmp_path, mock, name: str, aws_yaml: list[str], env: dict[str, str]):
    ensure_binaries()
    admin, port = free_port(), free_port()
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text("\n".join([
        "admin:", f"  listen: 127.0.0.1:{admin}",
        "tls:", "  roots: [webpki]", f"  extra_ca_file: {mock.ca_file}",
        "providers:", "  bedrock:", f"    listen: 127.0.0.1:{port}", "    region: us-east-1",
        f"    upstream_address: {mock.address}", "    aws:",
        *[f"      {line}" for line in aws_yaml],
    ]) + "\n")
    proc = Proc(name, [str(PROXY_BIN), "--config", str(cfg)], env=env)
    deadline = time.monotonic() + 10
    while True:
        try:
            status, _, body = http_get(port, "/health")
            if status == 200 and json.loads(body)["providers"]["bedrock"]:
                return proc, port
        except OSError:
            pass
        assert proc.poll() is None, proc.log_tail()
        assert time.monotonic() < deadline, f"bedrock not configured:\n{proc.log_tail()}"
        time.sleep(0.05)


def _invoke(port: int, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=BODY, headers={
            "content-type": "application/json",
            # What an agent may send; the proxy drops both.
            "authorization": "Bearer sk-agent-placeholder",
            "x-amz-security-token": "agent-placeholder",
        })
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _recorded(mock, path: str):
    rec = _mock(mock, "GET", "/mock/requests?last=1")[0]
    assert rec["path_and_query"] == path
    headers = [tuple(h) for h in rec["headers"]]
    body = base64.b64decode(rec["body_b64"])
    assert body == BODY, "the body reached the upstream changed"
    url = f"https://{rec['authority']}{rec['path_and_query']}"
    return rec["method"], url, headers, body


def test_static_keys_signature_verifies_with_botocore(tmp_path, mock):
    proc, port = _proxy(tmp_path, mock, "bedrock-static", [
        "access_key_id: env:KP_AWS_ID", "secret_access_key: env:KP_AWS_SECRET",
    ], {"KP_AWS_ID": AWS_ID, "KP_AWS_SECRET": AWS_SECRET})
    try:
        for path in (f"{MODEL}/invoke", "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"):
            status, answer = _invoke(port, path)
            assert status == 200, answer
            method, url, headers, body = _recorded(mock, path)
            ok, detail = verify(method, url, headers, body, AWS_ID, AWS_SECRET, None)
            assert ok, detail
            # The check can fail: one byte of the body changed after signing.
            tampered = body[:-2] + b" }"
            assert not verify(method, url, headers, tampered, AWS_ID, AWS_SECRET, None)[0]
            names = {n for n, _ in headers}
            assert "x-amz-security-token" not in names, "the agent's session token was forwarded"
    finally:
        proc.stop()
    log = proc.log.read_text(errors="replace")
    assert not any(m in log for m in CANARY_MARKERS)


def test_keyless_github_oidc_signature_verifies_with_botocore(tmp_path, mock):
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": f"https://127.0.0.1:{mock.port}/oidc/token?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "ghs-KPCANARY-request-4e5f6789",
    }
    proc, port = _proxy(tmp_path, mock, "bedrock-keyless", [
        "role_arn: arn:aws:iam::123456789012:role/agent",
        f"sts_endpoint: https://127.0.0.1:{mock.port}/sts/",
    ], env)
    try:
        status, answer = _invoke(port, f"{MODEL}/invoke")
        assert status == 200, answer
        method, url, headers, body = _recorded(mock, f"{MODEL}/invoke")
        token = dict(headers)["x-amz-security-token"]
        issued = [c for c in _mock(mock, "GET", "/mock/cloud/aws-credentials")
                  if c["session_token"] == token]
        assert len(issued) == 1, "signed with a credential the STS did not issue"
        c = issued[0]
        ok, detail = verify(method, url, headers, body, c["access_key_id"],
                            c["secret_access_key"], c["session_token"])
        assert ok, detail
        assert not verify(method, url, headers, body + b"\n", c["access_key_id"],
                          c["secret_access_key"], c["session_token"])[0]
    finally:
        proc.stop()
    log = proc.log.read_text(errors="replace")
    assert "credential_refreshed" in log
    for secret in (c["secret_access_key"], c["session_token"]):
        assert secret not in log
    assert not any(m in log for m in CANARY_MARKERS)
