"""Text views of tasks for the command line: lists, one task in full, wait results."""

from __future__ import annotations

import datetime
import json
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from omnispindle._core.cutting import newest_within
from omnispindle.cli.formatting import format_age, format_fields, format_table, printable, shorten

MAX_LISTED_RELATIVES = 20  # dependencies or dependents shown as text; --json has all
ERROR_WIDTH = 50
# Characters of parameters, a result or the errors shown as text: a result may
# be 16 MiB, too much for a terminal to scroll through; --json prints it all.
MOST_SHOWN_CHARS = 100_000


def task_list_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The ``omnispindle tasks`` table, one line per task."""
    return format_table(
        [
            {
                "id": row["task_id"],
                "type": row["task_type"],
                "state": row["state"],
                "priority": row["priority"],
                "attempts": f"{row['attempts']}/{row['max_attempts']}",
                "age": format_age(row["age_seconds"]),
                "worker": row["worker_name"],
                "last error": shorten(_problem(row), ERROR_WIDTH),
            }
            for row in rows
        ],
        title="Tasks",
    )


def wait_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The final records of waited-for tasks, with each one's outcome."""
    return format_table(
        [
            {
                "id": record["task_id"],
                "type": record["task_type"],
                "state": record["state"],
                "attempts": f"{record['attempts']}/{record['max_attempts']}",
                "outcome": shorten(_outcome(record), ERROR_WIDTH),
            }
            for record in records
        ],
        title="Tasks",
    )


def task_detail_text(task: Mapping[str, Any]) -> str:
    """One task in full: fields, parameters, result, relatives and every error."""
    sections = [
        f"Task {task['task_id']}\n{format_fields(_fields(task))}",
        _section("Parameters", _json_block(task["parameters"])),
        _section("Result", _json_block(task["result"])),
        _relatives("Dependencies", task["dependencies"]),
        _relatives("Dependents", task["dependents"]),
        _errors(task["errors"]),
    ]
    return "\n".join(sections)


def _fields(task: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("type", task["task_type"]),
        ("state", task["state"]),
        ("priority", task["priority"]),
        ("attempts", f"{task['attempts']} of {task['max_attempts']}"),
        ("worker", task["worker_name"]),
        ("created", f"{_when(task['created_at'])} ({format_age(task['age_seconds'])} ago)"),
        ("started", _when(task["started_at"])),
        ("finished", _when(task["finished_at"])),
        ("run after", _when(task["run_after"])),
        ("timeout", None if task["timeout_seconds"] is None else f"{task['timeout_seconds']:g} s"),
        ("retry backoff", f"{task['retry_backoff']:g} s"),
        ("capabilities", task["required_capabilities"] or None),
        ("group", task["group_key"]),
        ("idempotency key", task["idempotency_key"]),
        ("allow failed deps", "yes" if task["allow_failed_dependencies"] else "no"),
        ("cancel requested", _when(task["cancel_requested_at"])),
        ("cancel reason", task["cancel_reason"]),
    ]


def _relatives(title: str, relatives: Sequence[Mapping[str, Any]]) -> str:
    shown = relatives[:MAX_LISTED_RELATIVES]
    lines = [f"  {r['task_id']}  {r['state']}  {printable(r['task_type'])}" for r in shown]
    if len(relatives) > len(shown):
        lines.append(f"  ... and {len(relatives) - len(shown)} more (--json lists all)")
    return _section(f"{title} ({len(relatives)})", "\n".join(lines) or "  none")


def _errors(errors: Sequence[Mapping[str, Any]]) -> str:
    blocks = []
    for error in errors:
        heading = printable(
            f"attempt {error.get('attempt')}: {error.get('type')}: {error.get('message')}"
        )
        # A message's further lines, and the traceback, sit under its heading.
        first, _, rest = heading.rstrip("\n").partition("\n")
        trace = printable(error.get("traceback") or "").rstrip("\n")
        body = "\n".join(filter(None, [rest, trace]))
        blocks.append(f"  {first}" + ("\n" + textwrap.indent(body, "    ") if body else ""))
    # A history of 101 attempts may hold 6 MB: the newest errors within the
    # characters a value is shown, as the last is the one that counts.
    shown = blocks[len(blocks) - newest_within([len(b) for b in blocks], MOST_SHOWN_CHARS) :]
    if len(shown) < len(blocks):
        total = sum(len(b) for b in blocks)
        said = (
            f"  ... cut: {len(blocks)} errors of {total:,} characters; the newest"
            f" {len(shown)} shown (--json prints all)"
        )
        shown = [said, *shown]
    if shown and len(shown[-1]) > MOST_SHOWN_CHARS:  # one error alone over, by hand
        shown[-1] = shown[-1][:MOST_SHOWN_CHARS] + _cut_line(len(shown[-1]))
    return _section(f"Errors ({len(errors)})", "\n".join(shown) or "  none")


def _section(title: str, body: str) -> str:
    return f"\n{title}\n{body}"


def _json_block(value: Any) -> str:
    if value is None:
        return "  -"
    # default=str: a value Python could not decode shows what it was instead.
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return textwrap.indent(printable(text[:MOST_SHOWN_CHARS]), "  ") + _cut_line(len(text))


def _cut_line(length: int) -> str:
    """The line that follows a text of ``length`` characters cut after
    ``MOST_SHOWN_CHARS``; nothing for one that was not."""
    if length <= MOST_SHOWN_CHARS:
        return ""
    return (
        f"\n  ... cut: {length:,} characters, the first {MOST_SHOWN_CHARS:,}"
        " shown (--json prints all)"
    )


def _when(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat(sep=" ", timespec="seconds")


def _problem(row: Mapping[str, Any]) -> str | None:
    """The last error, or for a task cancelled without one, why it was cancelled."""
    if row["error_type"] is not None:
        return f"{row['error_type']}: {row['error_message']}"
    if row["cancel_reason"] is not None:
        return f"cancelled: {row['cancel_reason']}"
    return None


def _outcome(record: Mapping[str, Any]) -> str | None:
    error = record.get("error") or {}
    if record["state"] == "failed" and error:
        return f"{error.get('type')}: {error.get('message')}"
    if record["state"] == "cancelled":
        return record.get("cancel_reason")
    return None if record["result"] is None else json.dumps(record["result"], ensure_ascii=False)
