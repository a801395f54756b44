"""Every fenced code block of README.md and docs/**/*.md runs as a reader would run it.

The rules:

* Every fenced block declares its language (and nothing else after the
  fence), and the language is one the harness knows: ``python``, ``sql`` and ``bash``
  blocks are executed;
  ``text`` is for diagrams, synopses (with placeholders such as ``[--json]``
  or ``A|B``) and sample output, and is never executed, so a command meant to
  be run never goes in a ``text`` block. A block without a language, or with
  another one, fails. API reference pages are mkdocstrings directives and hold
  no fenced blocks.
* ``python``: a complete program, run as a script in a subprocess, in a
  temporary working directory, with ``OMNISPINDLE_DSN`` set to a fresh test
  database migrated to the latest schema. It must exit with status 0.
* ``bash``: run as a script with ``bash -euo pipefail`` in a temporary
  working directory, with the same ``OMNISPINDLE_DSN``, the virtualenv's bin
  directory first on ``PATH`` (``omnispindle`` and ``python`` are the
  project's) and ``COLUMNS=80`` (so help texts wrap alike everywhere). It must
  finish by itself with status 0; whatever it leaves running is killed.
  Commands that cannot run inside a test suite are recognised line by line
  and checked instead of run: a line ``make TARGET`` must name a target of
  the Makefile (``make -n TARGET`` succeeds), and a line ``pip install
  omnispindle`` or ``pip install 'omnispindle[EXTRA,...]'`` must name extras
  that pyproject.toml defines. Every other line of the block runs; any other
  ``make`` or ``pip`` line fails the test.
* ``sql``: the statements run one by one, in autocommit, against a fresh
  migrated database that holds the tasks the inspection examples name: task 1
  failed with no attempt left, task 2 depended on it, and a worker runs whose
  executor succeeds from its second call on. A block that updates
  ``omnispindle.tasks`` by hand must make task 1 run again and succeed,
  leaving ``omnispindle.failed_tasks`` empty.
* The database, for ``python`` and ``bash``: a block whose first line is a
  comment starting ``# On an empty database`` gets a fresh database without
  Omnispindle's schema instead; one whose first line starts ``# On the
  embedded server`` runs without ``OMNISPINDLE_DSN`` (the embedded Postgres
  then starts in the temporary directory). ``OMNISPINDLE_DSN`` is always a
  ``postgresql://`` URL.
* Expected output: when a ``python`` or ``bash`` block is followed (blank
  lines aside) by a line ``Output:`` and then a ``text`` block, the program's
  standard output must match that text as doctest matches with ELLIPSIS:
  ``...`` stands for any text, including several lines; trailing whitespace
  is ignored. A line ``Output:`` anywhere else fails.
"""

from __future__ import annotations

import doctest
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import tomllib
from psycopg.conninfo import conninfo_to_dict

from ..acceptance.test_quickstart import run_script
from .pages import OUTPUT_LEAD, ROOT, Block, all_blocks, expected_output, pages, parse, section

EXECUTED = ("python", "sql", "bash")
KNOWN = (*EXECUTED, "text")
EMPTY_DATABASE = "# On an empty database"
EMBEDDED_SERVER = "# On the embedded server"
BLOCK_TIMEOUT = 120  # seconds; examples take a few

BLOCKS = all_blocks()


def of_language(language: str) -> list:
    return [pytest.param(block, id=block.where) for block in BLOCKS if block.language == language]


# --------------------------------------------------------------------------- languages


@pytest.mark.parametrize("block", [pytest.param(b, id=b.where) for b in BLOCKS])
def test_block_declares_a_known_language(block: Block):
    assert block.language, f"{block.where}: a fenced block without a language; use one of {KNOWN}"
    assert block.language in KNOWN, (
        f"{block.where}: unknown language {block.language!r}; use one of {KNOWN}"
    )
    assert block.info == block.language, f"{block.where}: only the language goes after the fence"


def test_output_leads_follow_programs():
    for page in pages():
        lines = page.read_text().splitlines()
        closings = {b.end_line: b for b in parse(page)[1]}
        for number, line in enumerate(lines, start=1):
            if line.strip() != OUTPUT_LEAD:
                continue
            before = number - 1
            while before > 0 and not lines[before - 1].strip():
                before -= 1
            program = closings.get(before)
            assert program is not None and program.language in ("python", "bash"), (
                f"{page.relative_to(ROOT)}:{number}: {OUTPUT_LEAD!r} must follow a python or "
                "bash block"
            )
            assert expected_output(program) is not None


# --------------------------------------------------------------------------- databases


def as_url(dsn: str) -> str:
    """A libpq DSN (URL or key=value) as a ``postgresql://`` URL."""
    params = conninfo_to_dict(dsn)
    user, password = params.pop("user", ""), params.pop("password", "")
    host, port = params.pop("host", ""), params.pop("port", "")
    database = params.pop("dbname")
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    auth = f"{auth}@" if auth else ""
    if host.startswith("/"):  # a Unix socket directory goes in the query
        query = {"host": host, **({"port": port} if port else {}), **params}
        netloc = auth
    else:
        query = params
        netloc = f"{auth}{host}{f':{port}' if port else ''}"
    url = f"postgresql://{netloc}/{quote(database, safe='')}"
    return f"{url}?{urlencode(query)}" if query else url


def database_for(block: Block, request: pytest.FixtureRequest) -> str | None:
    """The OMNISPINDLE_DSN the block runs with (None: the embedded server)."""
    first = block.code.splitlines()[0] if block.code else ""
    if first.startswith(EMBEDDED_SERVER):
        return None
    return as_url(
        request.getfixturevalue("empty_dsn" if first.startswith(EMPTY_DATABASE) else "dsn")
    )


def check_output(block: Block, stdout: str) -> None:
    output = expected_output(block)
    if output is None:
        return
    want, got = (
        "".join(line.rstrip() + "\n" for line in text.rstrip().splitlines())
        for text in (output.code, stdout)
    )
    checker = doctest.OutputChecker()
    if not checker.check_output(want, got, doctest.ELLIPSIS):
        pytest.fail(
            f"{block.where}: the output differs from the page's (line {output.line})\n"
            + checker.output_difference(doctest.Example("", want), got, doctest.ELLIPSIS)
        )


# --------------------------------------------------------------------------- python


@pytest.mark.parametrize("block", of_language("python"))
def test_python_block(block: Block, request, tmp_path):
    done = run_script(block.code, tmp_path, env_dsn=database_for(block, request))
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"
    check_output(block, done.stdout)


# --------------------------------------------------------------------------- bash

MAKE_LINE = re.compile(r"^\s*make\s+(?P<target>[\w.-]+)\s*(?:#.*)?$")
PIP_LINE = re.compile(
    r"""^\s*pip\s+install\s+(?P<quote>['"]?)(?P<name>[\w.-]+)"""
    r"""(?:\[(?P<extras>[\w,-]+)\])?(?P=quote)\s*(?:#.*)?$"""
)
MAKE_OR_PIP = re.compile(r"^\s*(?:make|pip3?)(?:\s|$)")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def checked_script(block: Block) -> str:
    """The block's script, with its ``make`` and ``pip install`` lines checked and left out."""
    project = pyproject()["project"]
    lines = []
    for number, line in enumerate(block.code.splitlines(), start=block.line + 1):
        where = f"{block.page.relative_to(ROOT)}:{number}"
        make, pip = MAKE_LINE.match(line), PIP_LINE.match(line)
        if make:
            dry_run = subprocess.run(
                ["make", "-n", make["target"]], cwd=ROOT, capture_output=True, text=True, timeout=60
            )
            assert dry_run.returncode == 0, (
                f"{where}: `make -n {make['target']}` failed:\n{dry_run.stderr}"
            )
            lines.append(f": {line.strip()!r}  # checked, not run")
        elif pip:
            assert pip["name"] == project["name"], f"{where}: installs {pip['name']!r}"
            extras = set(filter(None, (pip["extras"] or "").split(",")))
            unknown = extras - set(project["optional-dependencies"])
            assert not unknown, f"{where}: pyproject.toml defines no extra {sorted(unknown)}"
            lines.append(f": {line.strip()!r}  # checked, not run")
        else:
            assert not MAKE_OR_PIP.match(line), (
                f"{where}: a make or pip line the harness does not recognise; write "
                "`make TARGET` or `pip install 'omnispindle[EXTRA]'`"
            )
            lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("block", of_language("bash"))
def test_bash_block(block: Block, request, tmp_path):
    script = tmp_path / "block.sh"
    script.write_text(checked_script(block))
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMNISPINDLE_DSN", "OMNISPINDLE_DATA_DIR")
    }
    dsn = database_for(block, request)
    if dsn:
        env["OMNISPINDLE_DSN"] = dsn
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["COLUMNS"] = "80"
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", str(script)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            status = process.wait(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # whatever the block left running
            except ProcessLookupError:
                pass
            process.wait()
    out, err = stdout_path.read_text(), stderr_path.read_text()
    assert status is not None, f"{block.where} ran longer than {BLOCK_TIMEOUT} s:\n{out}\n{err}"
    assert status == 0, f"{block.where} exited with {status}:\n{out}\n{err}"
    check_output(block, out)


# --------------------------------------------------------------------------- sql

RETRY_BY_HAND = re.compile(r"\bUPDATE\s+omnispindle\.tasks\b", re.IGNORECASE)
RETRY_WITH_DEPENDENTS = re.compile(r"retry_task\(1, with_dependents => true\)")


def statements(code: str) -> list[str]:
    lines = [line for line in code.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@pytest.mark.parametrize("block", of_language("sql"))
def test_sql_block(block: Block, client, conn, start_worker):
    failing = client.submit_task("flaky", max_retries=0)
    child = client.submit_task("flaky", dependencies=[failing])
    assert (failing, child) == (1, 2)  # the examples name tasks 1 and 2
    calls = []

    def flaky(task):
        calls.append(task["task_id"])
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return {"ok": True}

    start_worker({"flaky": flaky})
    assert client.wait_for_task(failing, timeout=30)["state"] == "failed"
    found = statements(block.code)
    assert found, f"{block.where}: no statement"
    # A function body holds semicolons of its own: such a block runs whole.
    for statement in [block.code] if "$$" in block.code else found:
        conn.execute(statement)
    if RETRY_BY_HAND.search(block.code):
        assert client.wait_for_task(failing, timeout=30)["result"] == {"ok": True}
        failed = conn.execute("SELECT count(*) FROM omnispindle.failed_tasks").fetchone()[0]
        assert failed == 0
    if RETRY_WITH_DEPENDENTS.search(block.code):
        assert client.wait_for_task(child, timeout=30)["result"] == {"ok": True}


def test_the_inspection_page_keeps_its_queries_and_the_retry_by_hand():
    _page, blocks = section("# Inspecting with SQL")
    _page, entry_points = section("## Submitting and retrying from SQL")
    inspecting = [block for block in blocks if block not in entry_points]
    found = [s for block in inspecting if block.language == "sql" for s in statements(block.code)]
    assert (
        len(found) == 13
    )  # with pausing (pause, paused types, resume) and limits (set, summary, clear)
    assert sum(bool(RETRY_BY_HAND.search(s)) for s in found) == 1


# ------------------------------------------------------------- what the README tests checked

# Output the examples' tests asserted before the documentation site: each
# program must keep an expected output (which test_python_block checks)
# holding these lines.
ASSERTED_OUTPUT = [
    ("## Quick Start", ["Result: 15"]),
    ("## Task dependencies", ["chain: 6 succeeded"]),
    ("## Batches", ["batch: [6, 120]"]),
    ("## Delayed tasks", ["{'reminded': 'ada'}", "{'reminded': 'bob'}"]),
    ("## Periodic tasks", ["{'reminded': 'ops'}"]),
    ("# Idempotency keys", ["order-42/charge"]),
    ("# Tracing with OpenTelemetry", ["POST /orders", "submit email", "execute email"]),
]


@pytest.mark.parametrize("heading, lines", ASSERTED_OUTPUT)
def test_examples_keep_their_expected_output(heading, lines):
    _page, blocks = section(heading)
    program = next(b for b in blocks if b.language == "python")
    output = expected_output(program)
    assert output is not None, f"{program.where}: no expected output"
    for line in lines:
        assert line in output.code, f"{program.where}: the expected output lacks {line!r}"
