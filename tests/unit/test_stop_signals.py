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


# A child forked after the handlers are installed: SIGTERM ends it (as the default
# action does) and does not reach the parent's pipe.
FORKED = textwrap.dedent(
    """
    import os, signal, threading, time
    from omnispindle.cli.signals import on_stop_signals

    stopped = threading.Event()
    on_stop_signals(stopped.set)
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # the fork hooks have run by the time this line does
        os.write(ready_w, b"x")
        time.sleep(30)
        os._exit(0)
    os.read(ready_r, 1)
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
    print("parent stopped" if stopped.wait(1) else "parent runs on", flush=True)
    """
)


def test_a_forked_child_keeps_the_default_signals_and_the_parent_runs_on():
    done = subprocess.run(
        [sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=20
    )
    assert done.stdout.split("\n")[:2] == ["True", "parent runs on"], done.stderr
