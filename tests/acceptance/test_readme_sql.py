"""The README's SQL inspection queries run, and say what they claim."""

from __future__ import annotations

import re

from .workers import ROOT

README = (ROOT / "README.md").read_text()


def sql_blocks() -> list[str]:
    section = README.split("## Inspecting with SQL", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.DOTALL)


def statements(block: str) -> list[str]:
    lines = [line for line in block.splitlines() if not line.startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def test_readme_queries_run_and_retry_by_hand_works(client, conn, start_worker):
    failing = client.submit_task("flaky", max_retries=0)
    child = client.submit_task("flaky", dependencies=[failing])
    assert (failing, child) == (1, 2)  # the README's examples name tasks 1 and 2
    calls = []

    def flaky(task):
        calls.append(task["task_id"])
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return {"ok": True}

    start_worker({"flaky": flaky})
    assert client.wait_for_task(failing, timeout=30)["state"] == "failed"
    found = [s for block in sql_blocks() for s in statements(block)]
    assert len(found) == 7
    for statement in found:
        conn.execute(statement)
    assert client.wait_for_task(failing, timeout=30)["result"] == {"ok": True}
    failed_view = conn.execute("SELECT count(*) FROM omnispindle.failed_tasks").fetchone()[0]
    assert failed_view == 0
