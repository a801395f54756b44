"""The wheel carries the SQL, the migrations and the dashboard's templates and static
files: an installed package needs no checkout, and no CDN."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from omnispindle._db.statements import parse_statements

from .workers import ROOT


def test_wheel_carries_sql_and_migrations(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("omnispindle-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in [*ROOT.glob("sql/**/*.sql"), *ROOT.glob("migrations/**/*.py")]:
        packaged = f"omnispindle/_data/{source.relative_to(ROOT).as_posix()}"
        if source.is_relative_to(ROOT / "sql" / "tests"):
            assert packaged not in names, f"{packaged} is the test suite's; it must not ship"
        else:
            assert packaged in names, f"{packaged} is missing from the wheel"
    queries = zipfile.ZipFile(wheel).read("omnispindle/_data/sql/queries/tasks.sql").decode()
    assert "claim_tasks" in parse_statements(queries)
    dashboard = ROOT / "omnispindle" / "dashboard"
    for source in [*dashboard.glob("templates/*.html"), *dashboard.glob("static/*")]:
        packaged = source.relative_to(ROOT).as_posix()
        assert packaged in names, f"{packaged} is missing from the wheel"
