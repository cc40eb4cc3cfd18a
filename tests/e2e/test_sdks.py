"""The real `openai` and `anthropic` Python SDKs through the proxy.

The clients hold only a placeholder key; the mock answers 401 unless the proxy stripped it and
injected the real (canary) key, so every success here proves the injection.
"""

import http.client
import socket
import ssl
import time

import anthropic
import openai
import pytest

from conftest import CHUNKS, EXPECTED_TEXT, PLACEHOLDER_KEY

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-5-5"
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(params=["/v1", ""], ids=["base-v1", "base-root"])
def oai(request, proxy):
    """An OpenAI client for both base URL forms: http://HOST:P/v1 and http://HOST:P."""
    client = openai.OpenAI(
        base_url=proxy.url("openai", request.param),
        api_key=PLACEHOLDER_KEY,
        max_retries=0,
        timeout=20,
    )
    yield client
    client.close()


@pytest.fixture
def claude(proxy):
    client = anthropic.Anthropic(
        base_url=proxy.url("anthropic"), api_key=PLACEHOLDER_KEY, max_retries=0, timeout=20
    )
    yield client
    client.close()


# --- OpenAI -----------------------------------------------------------------------------------


def test_openai_chat_completion(oai):
    r = oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert r.choices[0].message.content == EXPECTED_TEXT
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == CHUNKS
    assert r.usage.prompt_tokens == 11


def test_openai_chat_completion_stream_with_usage(oai):
    stream = oai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = []
    usage = None
    finish = None
    n_chunks = 0
    for chunk in stream:
        n_chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert "".join(text) == EXPECTED_TEXT
    assert finish == "stop"
    assert usage is not None, "include_usage asked for a usage chunk"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        11, CHUNKS, 11 + CHUNKS)
    assert n_chunks == CHUNKS + 3  # role, 5 deltas, finish, usage


def test_openai_responses(oai):
    r = oai.responses.create(model=OPENAI_MODEL, input="Say hello.")
    assert r.status == "completed"
    assert r.output_text == EXPECTED_TEXT
    assert (r.usage.input_tokens, r.usage.output_tokens) == (11, CHUNKS)


def test_openai_responses_stream(oai):
    stream = oai.responses.create(model=OPENAI_MODEL, input="Say hello.", stream=True)
    types = []
    deltas = []
    completed = None
    for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            completed = event.response
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == CHUNKS
    assert "".join(deltas) == EXPECTED_TEXT
    assert completed is not None
    assert completed.output_text == EXPECTED_TEXT
    assert completed.usage.output_tokens == CHUNKS


def test_openai_responses_stream_helper(proxy):
    client = openai.OpenAI(base_url=proxy.url("openai", "/v1"), api_key=PLACEHOLDER_KEY,
                           max_retries=0, timeout=20)
    with client.responses.stream(model=OPENAI_MODEL, input="Say hello.") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == EXPECTED_TEXT
    assert final.output_text == EXPECTED_TEXT
    client.close()


def test_openai_models_list(oai):
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o-mini" in ids
    assert len(ids) >= 2


def test_openai_raw_response_has_request_id(oai):
    raw = oai.chat.completions.with_raw_response.create(model=OPENAI_MODEL, messages=MESSAGES)
    # the proxy echoes a request id on every response
    assert raw.headers.get("x-request-id")
    assert raw.parse().choices[0].message.content == EXPECTED_TEXT


# --- Anthropic --------------------------------------------------------------------------------


def test_anthropic_messages_create(claude):
    m = claude.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES)
    assert m.content[0].type == "text"
    assert m.content[0].text == EXPECTED_TEXT
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (11, CHUNKS)


def test_anthropic_messages_stream(claude):
    with claude.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == EXPECTED_TEXT
    assert final.content[0].text == EXPECTED_TEXT
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, CHUNKS)


def test_anthropic_raw_stream_events(claude):
    stream = claude.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES,
                                    stream=True)
    types = [e.type for e in stream]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert types.count("content_block_delta") == CHUNKS


# --- provider not configured ------------------------------------------------------------------


NOT_CONFIGURED = "has no API key configured"


@pytest.mark.parametrize("max_retries", [0, 2])
def test_openai_sdk_surfaces_not_configured(proxy, max_retries):
    client = openai.OpenAI(base_url=proxy.url("unset", "/v1"), api_key=PLACEHOLDER_KEY,
                           max_retries=max_retries, timeout=20)
    start = time.monotonic()
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    elapsed = time.monotonic() - start
    client.close()
    err = info.value
    assert err.status_code == 403
    assert NOT_CONFIGURED in err.message
    assert isinstance(err.body, dict) and err.body.get("type") == "provider_not_configured"
    assert err.body.get("retryable") is False
    assert err.body.get("provider") == "unset"
    # 403 is final: no retry loop, even with retries allowed
    assert elapsed < 2.0, f"took {elapsed:.2f}s"


@pytest.mark.parametrize("max_retries", [0, 2])
def test_anthropic_sdk_surfaces_not_configured(proxy, max_retries):
    client = anthropic.Anthropic(base_url=proxy.url("unset-anthropic"), api_key=PLACEHOLDER_KEY,
                                 max_retries=max_retries, timeout=20)
    start = time.monotonic()
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES)
    elapsed = time.monotonic() - start
    client.close()
    err = info.value
    assert err.status_code == 403
    assert NOT_CONFIGURED in err.message
    assert elapsed < 2.0, f"took {elapsed:.2f}s"


def test_unset_streaming_request_also_403(proxy):
    client = openai.OpenAI(base_url=proxy.url("unset"), api_key=PLACEHOLDER_KEY,
                           max_retries=0, timeout=20)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True)
    client.close()


def test_placeholder_key_alone_is_refused_by_mock(mock):
    """Sanity check of the set-up: the mock itself refuses the placeholder key, so the other
    tests' successes prove the proxy injected the real one. Talks to the mock directly."""
    ctx = ssl.create_default_context(cafile=str(mock.ca_file))
    raw = socket.create_connection(("127.0.0.1", mock.port), timeout=5)
    conn = http.client.HTTPSConnection("127.0.0.1", mock.port, context=ctx, timeout=5)
    # the mock's certificate names api.openai.com: dial the address, verify the name
    conn.sock = ctx.wrap_socket(raw, server_hostname="api.openai.com")
    conn.request("GET", "/v1/models", headers={"Host": "api.openai.com",
                                               "Authorization": f"Bearer {PLACEHOLDER_KEY}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 401, body
