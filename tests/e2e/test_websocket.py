"""WebSocket tunnelling (DESIGN 5.7): a real WebSocket client (`websockets`) through the proxy
binary to the mock's echo endpoint. The client sends only a placeholder key; the mock only
accepts the upgrade when the proxy injected the real one."""

from __future__ import annotations

import http.client

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import PLACEHOLDER_KEY


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/realtime"])
def test_websocket_echo(proxy, path):
    uri = f"ws://127.0.0.1:{proxy.openai}{path}"
    headers = {"Authorization": f"Bearer {PLACEHOLDER_KEY}"}
    with connect(uri, additional_headers=headers, open_timeout=10, close_timeout=5) as ws:
        assert ws.response.status_code == 101
        assert ws.response.headers.get("x-request-id")
        for i in range(10):
            msg = f'{{"type":"session.update","i":{i}}}'
            ws.send(msg)
            assert ws.recv(timeout=10) == msg
        blob = bytes(range(256)) * 300
        ws.send(blob)
        assert ws.recv(timeout=10) == blob
        ws.ping(b"keepalive").wait(timeout=10)


def test_websocket_unconfigured_provider_403(proxy):
    uri = f"ws://127.0.0.1:{proxy.unset}/v1/responses"
    with pytest.raises(InvalidStatus) as err:
        with connect(uri, additional_headers={"Authorization": f"Bearer {PLACEHOLDER_KEY}"},
                     open_timeout=10):
            pass
    assert err.value.response.status_code == 403


def test_h2c_upgrade_400(proxy):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.openai, timeout=10)
    conn.request("GET", "/v1/models", headers={
        "Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAAP__",
    })
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 400
    assert b"invalid_request" in body
