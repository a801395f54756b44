"""``omnispindle demo`` from a clean directory: it runs its workflow and tidies up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of the demo, as a user would start it, with no configuration."""
    cwd = tmp_path_factory.mktemp("demo-cwd")
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMNISPINDLE_DSN", "OMNISPINDLE_DATA_DIR")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "omnispindle", "demo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done, cwd


def table(stdout: str, title: str) -> list[dict[str, str]]:
    """Parse the text table printed under ``title``, using its dashed rule for columns."""
    lines = stdout.splitlines()
    start = lines.index(title)
    header, rule = lines[start + 1], lines[start + 2]
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    rows = []
    for line in lines[start + 3 :]:
        if not line.strip():
            break
        rows.append({header[a:b].strip(): line[a:b].strip() for a, b in spans})
    return rows


def test_demo_exits_cleanly(demo):
    done, _ = demo
    assert done.returncode == 0, done.stderr
    assert "demo failed" not in done.stderr


def test_batch_results(demo):
    stdout = demo[0].stdout
    for expected in [
        "sum [1, 2, 3] = 6",
        "multiply [4, 5, 6] = 120",
        "sum [10, 20, 30, 40] = 100",
        "multiply [2, 3, 7] = 42",
        "sum [5, 8, 13, 21] = 47",
        "multiply [3, 3, 3] = 27",
    ]:
        assert expected in stdout


def test_chain_final_value(demo):
    final = next(line for line in demo[0].stdout.splitlines() if "final result" in line)
    assert final.endswith('{"count": 8, "largest": 81, "total": 173}')


def test_flaky_task_succeeded_on_second_attempt(demo):
    stdout = demo[0].stdout
    assert re.search(r"Flaky task \d+: succeeded on attempt 2 of", stdout)
    assert "error of attempt 1: ConnectionError: simulated transient failure" in stdout


def test_progress_lines_end_with_everything_succeeded(demo):
    progress = [line for line in demo[0].stdout.splitlines() if re.match(r"\[\s*[\d.]+ s\]", line)]
    assert progress, "no progress line"
    assert progress[-1].endswith(
        "blocked 0  pending 0  running 0  succeeded 10  failed 0  cancelled 0"
    )


def test_queue_table_counts_every_task(demo):
    rows = {row["task_type"]: row for row in table(demo[0].stdout, "Queues")}
    assert sorted(rows) == ["fetch", "flaky", "math", "report", "transform"]
    assert rows["math"]["succeeded"] == "6"
    assert {row["failed"] for row in rows.values()} == {"0"}


def test_three_workers_ran_and_stopped(demo):
    stdout = demo[0].stdout
    active = table(stdout, "Workers")
    stopped = table(stdout, "Workers after shutdown")
    names = ["demo-worker-1", "demo-worker-2", "demo-worker-3"]
    assert [row["name"] for row in active] == names
    assert {row["state"] for row in active} == {"active"}
    assert [(row["name"], row["state"]) for row in stopped] == [(n, "stopped") for n in names]
    assert [row["pid"] for row in stopped] == [row["pid"] for row in active]


def test_demo_leaves_no_files_behind(demo):
    done, cwd = demo
    data_dir = re.search(r"embedded Postgres in (\S+)", done.stdout).group(1)
    assert not Path(data_dir).exists()
    assert list(cwd.iterdir()) == []
