"""Independent check of an AWS SigV4 signature with botocore, as AWS verifies it server-side.

`verify` takes a request exactly as the mock upstream received it (`GET /mock/requests`: method,
path, headers, body) and recomputes the signature with `botocore.auth.SigV4Auth` over exactly the
headers that the `Authorization` header says were signed. botocore computes the canonical URI
from the path as sent (re-quoted, so `%3A` in a Bedrock model id is signed as `%253A` and `:` as
`%3A`, which is what AWS computes for every service but S3).
"""

from __future__ import annotations

import hashlib
import re

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<cred>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


class _ExactHeaders(SigV4Auth):
    """SigV4Auth that signs exactly the listed headers (as the AWS server does), not botocore's
    client-side choice (which would skip e.g. `user-agent`)."""

    def __init__(self, credentials, service, region, signed):
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request):
        out = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                out.add_header(name, value)
        return out


def _header(headers, name):
    values = [v for n, v in headers if n.lower() == name]
    return values[0] if values else None


def verify(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    region: str = "us-east-1",
    service: str = "bedrock",
) -> tuple[bool, str]:
    """Recompute the SigV4 signature of a received request with botocore.

    `url` is `https://<host><path and query as received>`; the host is used as the `host`
    header when the request has none (h2 carries it as `:authority`). Returns `(ok, detail)`:
    detail names the first mismatch, or is `"ok"`.
    """
    auth = _header(headers, "authorization")
    if auth is None:
        return False, "no authorization header"
    m = _AUTH.match(auth.strip())
    if not m:
        return False, f"malformed authorization header: {auth[:40]}..."
    parts = m["cred"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        return False, f"malformed credential scope: {'/'.join(parts[1:])}"
    akid, date, cred_region, cred_service, _ = parts
    if akid != access_key:
        return False, "credential access key id is not the expected one"
    if (cred_region, cred_service) != (region, service):
        return False, f"scope {cred_region}/{cred_service}, want {region}/{service}"
    amz_date = _header(headers, "x-amz-date")
    if amz_date is None or not amz_date.startswith(date):
        return False, f"x-amz-date {amz_date!r} does not match the scope date {date}"
    signed = m["signed"].split(";")
    if signed != sorted(set(signed)) or any(n != n.lower() for n in signed):
        return False, f"SignedHeaders not lowercase, sorted and unique: {m['signed']}"
    token = _header(headers, "x-amz-security-token")
    if session_token is not None and token != session_token:
        return False, "x-amz-security-token is not the session token"
    if token is not None and "x-amz-security-token" not in signed:
        return False, "x-amz-security-token sent but not signed"
    content_sha = _header(headers, "x-amz-content-sha256")
    if content_sha not in (None, "UNSIGNED-PAYLOAD"):
        if content_sha != hashlib.sha256(body).hexdigest():
            return False, "x-amz-content-sha256 is not the body's SHA-256"

    request = AWSRequest(method=method, url=url, data=body)
    request.headers = HTTPHeaders()
    for name, value in headers:
        if name.lower() in signed:
            request.headers.add_header(name.lower(), value)
    if "host" in signed and "host" not in request.headers:
        request.headers["host"] = url.split("/")[2]
    missing = [n for n in signed if n not in request.headers]
    if missing:
        return False, f"signed headers missing from the request: {missing}"
    request.context["timestamp"] = amz_date

    signer = _ExactHeaders(Credentials(access_key, secret_key, session_token), service, region, signed)
    canonical = signer.canonical_request(request)
    want = signer.signature(signer.string_to_sign(request, canonical), request)
    if want != m["sig"]:
        return False, "signature mismatch; canonical request botocore computed:\n" + canonical
    return True, "ok"
