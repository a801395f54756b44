"""The README's guides run as written, as standalone scripts against a database."""

from __future__ import annotations

import pytest

from .test_quickstart import python_block, run_script


@pytest.mark.parametrize("heading, expected", [
    ("### Delayed and periodic tasks", ["{'reminded': 'ada'}", "{'reminded': 'bob'}",
                                        "{'reminded': 'ops'}"]),
    ("### Idempotency keys", ["order-42/charge"]),
    ("### Tracing with OpenTelemetry", ['"name": "POST /orders"', '"name": "submit email"',
                                        '"name": "execute email"']),
])
def test_guide_runs(heading, expected, dsn, tmp_path):
    done = run_script(python_block(heading), tmp_path, env_dsn=dsn)
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout, done.stdout
