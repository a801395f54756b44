"""Cron expressions in a time zone: checked, and their fire times found, by cronsim.

An expression has five fields (minute, hour, day of month, month, day of
week) or six, with a second field first. Fields take what Debian's cron
takes: ``*``, ``N``, ``A-B``, ``*/S``, ``A-B/S`` and ``N/S`` (from N to the
field's maximum), comma lists, names (``jan``, ``mon``), and ``L`` (the last
day of the month), ``5L`` (its last Friday), ``1#2`` (its second Monday) and
``LW`` (its last weekday). Weekday 0 and 7 are both Sunday, and 7 is the
field's maximum, so ``1/2`` means Monday, Wednesday, Friday and Sunday. When
both day fields are restricted (neither starts with ``*``), a day matches if
either does. The macros ``@yearly`` (``@annually``), ``@monthly``,
``@weekly``, ``@daily`` (``@midnight``) and ``@hourly`` stand for the
expressions below.

Times are wall-clock times in the expression's zone (UTC by default). Where
daylight saving time skips an hour, a time inside the gap fires at the end of
the gap; where it repeats an hour, a fixed time fires once (the first time)
and an expression with a wildcard or a step in the hour field fires in both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from omnispindle._core.validation import quoted
from omnispindle.errors import CronExpressionError, ValidationError

UTC_NAME = "UTC"
# How far around a daylight saving change a backward search is checked going forward.
DST_MARGIN = timedelta(hours=3)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Each field, what it takes, in the order of a six-field expression.
_FIELDS = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L and LW",
    "month": "1-12 and jan-dec",
    "day-of-week": "0-7 (0 and 7 are Sunday), sun-sat, 5L and 1#2",
}
_FORMS = "*, N, A-B, */S, A-B/S, N/S and comma lists of those"
_NAMES = {
    **{
        m: n
        for n, m in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
        )
    },
    **{d: n for n, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
# A range of one value with a step, such as 7-7/1: cronsim reads it as 7/1 (from 7
# to the field's end), where cron means 7 alone.
_ONE_VALUE_RANGE = re.compile(r"([^-/]+)-([^-/]+)/([1-9]\d*)")
# An item of a day-of-month field: a day, a range, a step.
_DAY_ITEM = re.compile(r"(?:\*|(\d+)(?:-(\d+))?)(?:/(\d+))?")


@dataclass(frozen=True)
class CronExpression:
    """A checked cron expression in a time zone; equal and hashed by both."""

    text: str
    zone: str = UTC_NAME
    _fields: str = field(init=False, repr=False, compare=False)
    _tz: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fields", _expanded(self.text))
        object.__setattr__(self, "_tz", time_zone(self.zone))
        _check(self.text, self._fields)

    @classmethod
    def parse(cls, text: str, zone: str = UTC_NAME) -> CronExpression:
        """Check ``text`` in time zone ``zone`` (an IANA name such as ``Europe/Berlin``).

        Raises:
            CronExpressionError: the expression is malformed or never fires, or
                the zone is unknown.
        """
        return cls(text, zone)

    @property
    def has_seconds(self) -> bool:
        """Whether the expression has a second field (six fields)."""
        return len(self._fields.split()) == 6

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment``, in UTC.

        Raises:
            ValidationError: ``moment`` is not an aware datetime, or no fire time
                comes before the end of the years ``datetime`` supports.
        """
        start = self._local(moment)
        try:
            return _utc(next(CronSim(self._fields, start)))
        except (OverflowError, StopIteration):
            raise ValidationError(
                f"cron expression {self.text!r} has no fire time after {moment.isoformat()}"
                " within the years datetime supports"
            ) from None

    def last_at_or_before(self, moment: datetime) -> datetime | None:
        """The latest fire time at or before ``moment``, in UTC, or None if there is none.

        Raises:
            ValidationError: ``moment`` is not an aware datetime.
        """
        start = self._local(moment)
        found = self._reverse(start)
        while found is not None and (
            found > _utc(start) or _changes_offset(self._tz, found, start)
        ):
            # cronsim's backward search can miss or invent a time where daylight
            # saving time skips or repeats an hour, or find one after the moment
            # (its start a second later, in wall time, can be an hour later at the
            # end of a repeated hour's first run); going forward, it does not.
            early = (found - DST_MARGIN).astimezone(self._tz)
            forward = self._forward_until(early, start)
            if forward is not None:
                return forward
            found = self._reverse(early)
        return found

    def _reverse(self, start: datetime) -> datetime | None:
        """cronsim's latest fire time at or before ``start`` (local), in UTC."""
        try:
            # cronsim looks strictly before its start: a second later includes the moment.
            return _utc(next(CronSim(self._fields, start + timedelta(seconds=1), reverse=True)))
        except (OverflowError, StopIteration):
            return None

    def _forward_until(self, early: datetime, start: datetime) -> datetime | None:
        """The latest fire time after ``early`` and at or before ``start``, in UTC."""
        latest = None
        for fire in CronSim(self._fields, early):
            # In UTC: two wall times of one zone compare without their fold, so
            # 02:15 of a repeated hour's first run came after 02:00 of its second.
            if _utc(fire) > _utc(start):
                break
            latest = fire
        return None if latest is None else _utc(latest)

    def _local(self, moment: datetime) -> datetime:
        """``moment`` in the expression's zone, without its fraction of a second."""
        if not isinstance(moment, datetime):
            raise ValidationError(f"moment must be a datetime, got {type(moment).__name__}")
        if moment.utcoffset() is None:
            raise ValidationError(
                f"moment {moment.isoformat()} has no time zone; give an aware datetime"
            )
        try:
            return moment.astimezone(self._tz).replace(microsecond=0)
        except OverflowError:
            raise ValidationError(
                f"moment {moment.isoformat()} is outside the years datetime supports"
            ) from None


def time_zone(name: object) -> tzinfo:
    """The time zone called ``name`` (IANA, e.g. ``America/New_York``; ``UTC``).

    Raises:
        CronExpressionError: no such zone.
    """
    if not isinstance(name, str) or not name:
        raise CronExpressionError(f"a time zone must be a non-empty string, got {quoted(name)}")
    if name == UTC_NAME:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronExpressionError(
            f"unknown time zone {quoted(name)}: give an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


def _changes_offset(tz: tzinfo, found: datetime, start: datetime) -> bool:
    """Whether the zone's offset from UTC changes between a margin before ``found``
    and ``start`` (never in UTC, nor at the start of the years datetime supports)."""
    if tz is timezone.utc:
        return False
    try:
        earlier = (found - DST_MARGIN).astimezone(tz)
    except OverflowError:
        return False
    return earlier.utcoffset() != start.astimezone(tz).utcoffset()


def _expanded(text: object) -> str:
    """The five or six fields ``text`` stands for (a macro replaced)."""
    if not isinstance(text, str):
        raise CronExpressionError(f"a cron expression must be a string, got {type(text).__name__}")
    words = text.split()
    if not words:
        raise CronExpressionError("the cron expression is empty")
    if words[0].startswith("@"):
        return _macro(text, words)
    if len(words) not in (5, 6):
        raise CronExpressionError(
            f"cron expression {quoted(text)}: expected 5 fields (minute hour day-of-month month "
            f"day-of-week) or 6 (a second field first), got {len(words)}"
        )
    return " ".join(",".join(map(_one_value, word.split(","))) for word in words)


def _one_value(item: str) -> str:
    """``A-A/S`` (also ``fri-5/2``) as ``A``; any other item as it is."""
    found = _ONE_VALUE_RANGE.fullmatch(item)
    same = found is not None and _number(found[1]) == _number(found[2]) is not None
    return found[1] if found and same else item


def _number(value: str) -> int | None:
    """A field value as a number: digits, or a month or weekday name."""
    name = value.lower()
    if name in _NAMES:
        return _NAMES[name]
    return int(value) if value.isascii() and value.isdigit() else None


def _macro(text: str, words: list[str]) -> str:
    name = words[0].lower()
    if name not in _MACROS:
        raise CronExpressionError(
            f"cron expression {quoted(text)}: unsupported macro {words[0]!r}; "
            f"use one of {', '.join(_MACROS)}"
        )
    if len(words) > 1:
        raise CronExpressionError(
            f"cron expression {quoted(text)}: macro {quoted(name)} takes no other fields"
        )
    return _MACROS[name]


def _check(text: str, fields: str) -> None:
    """Let cronsim parse the fields; say which one it refused, and what it takes."""
    try:
        CronSim(fields, datetime(2000, 1, 1, tzinfo=timezone.utc))
    except CronSimError as exc:
        raise CronExpressionError(_refusal(text, fields, str(exc))) from None


def _refusal(text: str, fields: str, reason: str) -> str:
    words = fields.split()
    names = list(_FIELDS)[-len(words) :]
    refused = next((n for n in names if reason.lower() == f"bad {n}"), None)
    if refused is None:
        return f"cron expression {quoted(text)}: {reason}"
    value = words[names.index(refused)]
    if refused == "day-of-month" and _could_be_a_day(value):
        return f"cron expression {quoted(text)} never fires: no month in it has day {quoted(value)}"
    return (
        f"cron expression {quoted(text)}: the {refused} field {quoted(value)} is not valid: "
        f"values are {_FIELDS[refused]}; forms are {_FORMS}"
    )


def _could_be_a_day(value: str) -> bool:
    """Whether each item of a day-of-month field is well formed and within 1-31: when
    cronsim still refuses the field, no month it names has such a day."""
    for item in value.split(","):
        found = _DAY_ITEM.fullmatch(item)
        if found is None:
            return False
        first, last, step = (int(n) if n else None for n in found.groups())
        days = [n for n in (first, last) if n is not None]
        if any(not 1 <= n <= 31 for n in days) or step == 0 or days != sorted(days):
            return False
    return True
