"""Unit tests of the SigV4 verifier (tests/e2e/sigv4_check.py): requests signed by botocore
itself verify; any change to what was signed does not. The last test signs requests to the mock
and verifies what `/mock/requests` says it received (no proxy)."""

from __future__ import annotations

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sigv4_check import verify

AKID = "ASIAMOCK000000000001"
SECRET = "mock-secret-0123456789abcdefghijklmnopqrs"
SESSION = "IQoJmock//session-token"
HOST = "bedrock-runtime.us-east-1.amazonaws.com"
BODY = b'{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[]}'


def signed(path: str, body: bytes = BODY, session: str | None = SESSION):
    """A request signed by botocore, as (method, url, headers, body)."""
    url = f"https://{HOST}{path}"
    req = AWSRequest(method="POST", url=url, data=body,
                     headers={"content-type": "application/json", "accept": "application/json"})
    SigV4Auth(Credentials(AKID, SECRET, session), "bedrock", "us-east-1").add_auth(req)
    headers = [(k.lower(), v) for k, v in req.headers.items()]
    return "POST", url, headers, body


def check(method, url, headers, body, **kw):
    return verify(method, url, headers, body, AKID, kw.pop("secret", SECRET),
                  kw.pop("session", SESSION), region="us-east-1", service="bedrock", **kw)


def test_botocore_signed_request_verifies():
    ok, detail = check(*signed("/model/anthropic.claude-3-haiku/invoke"))
    assert ok, detail
    assert detail == "ok"


def test_static_credentials_without_session_token():
    method, url, headers, body = signed("/model/m/converse", session=None)
    assert not any(n == "x-amz-security-token" for n, _ in headers)
    ok, detail = verify(method, url, headers, body, AKID, SECRET, None)
    assert ok, detail


def test_one_changed_body_byte_fails():
    method, url, headers, body = signed("/model/m/invoke")
    tampered = body.replace(b"64", b"65")
    assert len(tampered) == len(body) and tampered != body
    ok, detail = check(method, url, headers, tampered)
    assert not ok
    assert "signature mismatch" in detail


def test_changed_signed_header_fails():
    method, url, headers, body = signed("/model/m/invoke")
    changed = [(n, "text/plain" if n == "content-type" else v) for n, v in headers]
    ok, detail = check(method, url, changed, body)
    assert not ok and "signature mismatch" in detail


def test_unsigned_header_may_change():
    method, url, headers, body = signed("/model/m/invoke")
    ok, detail = check(method, url, headers + [("x-extra", "1")], body)
    assert ok, detail


def test_wrong_secret_or_session_token_fails():
    assert not check(*signed("/model/m/invoke"), secret="other")[0]
    ok, detail = check(*signed("/model/m/invoke"), session="other")
    assert not ok and "session token" in detail


def test_model_id_with_percent_encoded_colon():
    path = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
    method, url, headers, body = signed(path)
    ok, detail = check(method, url, headers, body)
    assert ok, detail
    # AWS (and botocore) sign the path as sent, re-encoded: `%3A` becomes `%253A`.
    req = AWSRequest(method="POST", url=url, data=body)
    req.context["timestamp"] = "20261204T080000Z"
    canonical = SigV4Auth(Credentials(AKID, SECRET), "bedrock", "us-east-1").canonical_request(req)
    assert canonical.split("\n")[1] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/invoke"
    # So the same path sent with a literal colon does not verify (canonical URI `%3A`).
    ok, detail = check(method, url.replace("%3A", ":"), headers, body)
    assert not ok
    assert detail.split("\n")[2] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"


def test_model_id_with_literal_colon():
    path = "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke-with-response-stream"
    ok, detail = check(*signed(path))
    assert ok, detail


def test_missing_or_malformed_authorization():
    method, url, headers, body = signed("/model/m/invoke")
    no_auth = [(n, v) for n, v in headers if n != "authorization"]
    assert check(method, url, no_auth, body) == (False, "no authorization header")
    bad = [(n, v.replace("Signature=", "Sig=") if n == "authorization" else v) for n, v in headers]
    assert not check(method, url, bad, body)[0]


def test_h2_request_without_host_header_uses_the_url_authority():
    method, url, headers, body = signed("/model/m/invoke")
    assert not any(n == "host" for n, _ in headers)  # botocore signs host from the URL
    ok, detail = check(method, url, headers, body)
    assert ok, detail
    ok, _ = check(method, url.replace(HOST, "evil.example"), headers, body)
    assert not ok


# --- against the mock: what /mock/requests returns is exactly what was signed -------------------


def _https(mock, method, path, body=b"", headers=None):
    import http.client
    import json
    import ssl

    ctx = ssl.create_default_context(cafile=str(mock.ca_file))
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", mock.port, context=ctx, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data[:1] in (b"{", b"[") else data)
    finally:
        conn.close()


def _signed_to_mock(mock, creds: Credentials, path: str):
    url = f"https://127.0.0.1:{mock.port}{path}"
    req = AWSRequest(method="POST", url=url, data=BODY, headers={"content-type": "application/json"})
    SigV4Auth(creds, "bedrock", "us-east-1").add_auth(req)
    status, answer = _https(mock, "POST", path, BODY, dict(req.headers.items()))
    assert status == 200, answer
    status, recorded = _https(mock, "GET", "/mock/requests?last=1")
    assert status == 200
    rec = recorded[0]
    assert rec["path_and_query"] == path
    return rec


def test_requests_recorded_by_the_mock_verify(mock):
    import base64

    path = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
    static = Credentials("AKIAMOCKSTATIC000001", SECRET)
    rec = _signed_to_mock(mock, static, path)
    headers = [tuple(h) for h in rec["headers"]]
    body = base64.b64decode(rec["body_b64"])
    url = f"https://{rec['authority']}{rec['path_and_query']}"
    ok, detail = verify(rec["method"], url, headers, body, static.access_key, SECRET)
    assert ok, detail
    ok, _ = verify(rec["method"], url, headers, body + b" ", static.access_key, SECRET)
    assert not ok

    # Temporary credentials from the mock's OIDC -> STS chain, secret read back from the mock.
    status, oidc = _https(mock, "GET", "/oidc/token?api-version=2.0&audience=sts.amazonaws.com",
                          headers={"authorization": "Bearer request-token"})
    assert status == 200
    form = ("Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleSessionName=s"
            "&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fr&WebIdentityToken=" + oidc["value"])
    status, _ = _https(mock, "POST", "/sts/", form.encode(),
                       {"content-type": "application/x-www-form-urlencoded"})
    assert status == 200
    status, issued = _https(mock, "GET", "/mock/cloud/aws-credentials")
    cred = issued[-1]
    temp = Credentials(cred["access_key_id"], cred["secret_access_key"], cred["session_token"])
    rec = _signed_to_mock(mock, temp, path.replace("invoke", "converse"))
    headers = [tuple(h) for h in rec["headers"]]
    body = base64.b64decode(rec["body_b64"])
    url = f"https://{rec['authority']}{rec['path_and_query']}"
    ok, detail = verify(rec["method"], url, headers, body, temp.access_key, temp.secret_key,
                        temp.token)
    assert ok, detail
