"""The exit codes of the ``omnispindle`` command, and their description for ``--help``."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # a database error, or an operation the queue refused
EXIT_USAGE = 2  # a bad argument; nothing was done
EXIT_UNKNOWN_TASK = 3
EXIT_TASK_FAILED = 4  # a waited-for task failed or was cancelled
EXIT_TIMEOUT = 5  # a wait ended before its tasks finished
# A worker's executors cannot be loaded (sysexits' EX_CONFIG): restarting will not help.
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EPILOG = f"""\
exit codes:
  {EXIT_OK}    ok
  {EXIT_ERROR}    error: a database error, or an operation the queue refused
  {EXIT_USAGE}    usage: a bad argument
  {EXIT_UNKNOWN_TASK}    unknown task id
  {EXIT_TASK_FAILED}    wait: a task failed or was cancelled
  {EXIT_TIMEOUT}    wait: timed out before every task finished
  {EXIT_CONFIG}   worker: its --executors module cannot be imported, defines no
       executors, or --capabilities leave it none
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)

A refused operation, a bad argument or an unknown id changes nothing.
Run `omnispindle COMMAND --help` for a command's arguments.
"""
