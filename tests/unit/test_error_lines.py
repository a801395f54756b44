"""The command line writes each error line whole: with PYTHONUNBUFFERED every
write reaches the file at once, and a supervisor's children share one stderr."""

from __future__ import annotations

import io

import pytest

from omnispindle.cli.main import main


class Writes(io.RawIOBase):
    """A raw stream that keeps each write it is given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return len(data)


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--dsn", "port=notaport ="],  # an error raised to main
        ["worker", "--executors", "x", "--min-processes", "5", "--max-processes", "2"],
        ["dashboard"],  # no DSN
    ],
)
def test_an_error_line_is_one_write(argv, monkeypatch):
    monkeypatch.delenv("OMNISPINDLE_DSN", raising=False)
    raw = Writes()
    monkeypatch.setattr("sys.stderr", io.TextIOWrapper(raw, write_through=True))
    assert main(argv) != 0
    assert raw.writes, "nothing was written to stderr"
    assert all(write.endswith(b"\n") for write in raw.writes), raw.writes
