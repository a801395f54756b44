"""No secret on a command line, where any user of the host reads it in ``ps``."""

from __future__ import annotations

from omnispindle.bench import workflows


def test_bench_worker_processes_get_the_dsn_from_the_environment(monkeypatch):
    """Issue 18, finding 8: the DSN, password included, was on the worker's command line."""
    started = {}

    def popen(args, env=None):
        started.update(args=args, env=env)

    monkeypatch.setattr(workflows.subprocess, "Popen", popen)
    dsn = "postgresql://app:s3cret@db.example/app"
    workflows.worker_process(dsn, "w-1", 4, 5.0)
    assert not any("s3cret" in arg for arg in started["args"])
    assert started["env"]["OMNISPINDLE_DSN"] == dsn
