"""The README's Quick Start and seed snippets, run as a new user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from omnispindle import TaskQueue
from omnispindle.errors import ConfigurationError, EmbeddedServerUnavailable

from .workers import ROOT

README = (ROOT / "README.md").read_text()


def python_block(heading: str) -> str:
    """The first ```python block after a README heading."""
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def run_script(code: str, cwd, env_dsn: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OMNISPINDLE_DSN", "OMNISPINDLE_DATA_DIR")}
    if env_dsn:
        env["OMNISPINDLE_DSN"] = env_dsn
    script = cwd / "script.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.smoke
def test_quick_start_runs_verbatim_with_no_configuration(tmp_path):
    done = run_script(python_block("## Quick Start"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Result: 15\n"
    assert (tmp_path / ".omnispindle" / "pgdata" / "PG_VERSION").exists()


def test_quick_start_then_dependency_and_batch_snippets(tmp_path, dsn):
    quick_start = python_block("## Quick Start")
    setup, shutdown = quick_start.split("# Shutdown")
    snippets = textwrap.dedent("""
        step1 = client.wait_for_task(step1_id)
        step2 = client.wait_for_task(step2_id)
        print("chain:", step1["result"]["result"], step2["state"])
        print("batch:", [r["result"]["result"] for r in batch_results])
    """)
    code = "\n".join([setup, python_block("### Task Dependencies"),
                      python_block("### Batch Processing"), snippets, shutdown])
    done = run_script(code, tmp_path, env_dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Result: 15", "chain: 6 succeeded", "batch: [6, 120]"]


def test_state_persists_across_restarts(tmp_path):
    path = tmp_path / "state"
    first = TaskQueue(persistence_path=path)
    from omnispindle import TaskQueueClient

    task_id = TaskQueueClient(local_queue=first).submit_task("later", {"keep": True})
    first.shutdown()
    second = TaskQueue(persistence_path=path)
    try:
        assert second.load_state() == {"pending": 1}
        assert TaskQueueClient(local_queue=second).get_task(task_id)["parameters"] == {"keep": True}
    finally:
        second.shutdown()


def test_missing_pgserver_names_both_fixes(monkeypatch):
    monkeypatch.delenv("OMNISPINDLE_DSN", raising=False)
    monkeypatch.setitem(sys.modules, "pgserver", None)
    with pytest.raises(EmbeddedServerUnavailable) as raised:
        TaskQueue()
    assert "pip install 'omnispindle[embedded]'" in str(raised.value)
    assert "OMNISPINDLE_DSN" in str(raised.value)


def test_persistence_path_with_a_dsn_is_refused(dsn):
    with pytest.raises(ConfigurationError, match="persistence_path"):
        TaskQueue(dsn=dsn, persistence_path="state")
