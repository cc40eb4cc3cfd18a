"""GET /metrics on the admin listener: parseable Prometheus/OpenMetrics text, prefix
`keyproxy_`, requests counted by provider and status, token usage read from responses."""

import time

import openai
import anthropic
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client import parser as prom_parser

from conftest import CHUNKS, PLACEHOLDER_KEY, http_get


def scrape(proxy):
    status, headers, body = http_get(proxy.admin, "/metrics")
    assert status == 200, body
    text = body.decode()
    if "openmetrics" in headers.get("content-type", ""):
        families = list(om_parser.text_string_to_metric_families(text))
    else:
        families = list(prom_parser.text_string_to_metric_families(text))
    return families


def samples(families, name: str, **labels):
    """Sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for fam in families:
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_metrics_parse_and_use_the_prefix(proxy):
    families = scrape(proxy)
    assert families
    names = sorted(f.name for f in families)
    bad = [n for n in names if not n.startswith("keyproxy_")]
    assert not bad, f"metrics without the keyproxy_ prefix: {bad}"


def test_requests_counted_by_provider_and_status(proxy):
    before = scrape(proxy)
    client = openai.OpenAI(base_url=proxy.url("openai", "/v1"), api_key=PLACEHOLDER_KEY,
                           max_retries=0, timeout=20)
    client.models.list()
    client.close()
    http_get(proxy.unset, "/v1/models")
    want = {("openai", "200"): 1, ("unset", "403"): 1}
    deadline = time.monotonic() + 2
    while True:
        after = scrape(proxy)
        got = {(p, st): samples(after, "keyproxy_requests_total", provider=p, status=st)
               - samples(before, "keyproxy_requests_total", provider=p, status=st)
               for p, st in want}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got == want


def test_token_usage_is_counted(proxy):
    before = scrape(proxy)
    oai = openai.OpenAI(base_url=proxy.url("openai", "/v1"), api_key=PLACEHOLDER_KEY,
                        max_retries=0, timeout=20)
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    list(oai.chat.completions.create(model="gpt-4o-mini",
                                     messages=[{"role": "user", "content": "x"}], stream=True,
                                     stream_options={"include_usage": True}))
    oai.close()
    claude = anthropic.Anthropic(base_url=proxy.url("anthropic"), api_key=PLACEHOLDER_KEY,
                                 max_retries=0, timeout=20)
    with claude.messages.stream(model="claude-sonnet-5-5", max_tokens=64,
                                messages=[{"role": "user", "content": "x"}]) as s:
        s.get_final_message()
    claude.close()
    want = {("openai", "input"): 2 * 11, ("openai", "output"): 2 * CHUNKS,
            ("anthropic", "input"): 11, ("anthropic", "output"): CHUNKS}
    # every mock answer reports 11 input tokens and CHUNKS output tokens; usage is charged when
    # a body ends, which may be a moment after the client read its last byte
    deadline = time.monotonic() + 2
    while True:
        after = scrape(proxy)
        got = {(p, k): samples(after, "keyproxy_tokens_total", provider=p, kind=k)
               - samples(before, "keyproxy_tokens_total", provider=p, kind=k) for p, k in want}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got == want
