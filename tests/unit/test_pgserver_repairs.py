"""The embedded server's repairs lean on pgserver's internals: on a pgserver
without them they stand aside, and the queue starts as pgserver alone would."""

from __future__ import annotations

import types

from omnispindle._db import pgserver_repairs


def test_repairs_stand_aside_on_a_pgserver_without_the_internals_they_use(tmp_path):
    bare = types.SimpleNamespace()
    other = types.SimpleNamespace(postgres_server=types.SimpleNamespace())
    for pgserver in (bare, other):
        pgserver_repairs.keep_socket_paths_whole(pgserver)
        pgserver_repairs.clear_what_killed_processes_left(pgserver, tmp_path)
    assert list(tmp_path.iterdir()) == []
