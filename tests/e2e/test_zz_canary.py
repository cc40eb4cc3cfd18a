"""Runs last (file order): no log written so far holds the injected key or a piece of it.

conftest.pytest_sessionfinish checks again once every process has been stopped."""

from conftest import canary_hits, LOG_DIR


def test_logs_never_contain_the_key():
    logs = sorted(LOG_DIR.glob("e2e-*.log"))
    assert logs, "no e2e logs were written"
    hits = canary_hits()
    assert not hits, f"the injected key (or a piece of it) appears in: {hits}"
