"""SIGTERM and SIGINT stop a command even when they land while the main thread
holds the lock that stopping needs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# The main thread holds the stop Event's lock, as Event.wait holds it between its
# checks, when the signal arrives: a handler that set the Event itself would wait
# for that lock forever, in the thread that holds it.
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading
    from omnispindle.cli.signals import on_stop_signals

    stopped = threading.Event()
    on_stop_signals(stopped.set)
    with stopped._cond:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        for _ in range(1000):  # the handler runs between these bytecodes
            pass
    print("stopped" if stopped.wait(10) else "not stopped", flush=True)
    """
)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_during_a_wait_stops_the_command(signal_name):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, signal_name], capture_output=True, text=True, timeout=20
    )
    assert done.stdout.strip() == "stopped", done.stderr
