"""Cron expressions: parse them and find their fire times, in UTC.

An expression has five fields (minute, hour, day of month, month, day of
week) or six, with a second field first. A field is ``*``, ``N``, ``A-B``,
``*/S``, ``A-B/S`` or ``N/S`` (from N to the field's maximum), or a comma
list of those. Months may be written ``jan``..``dec`` and weekdays
``sun``..``sat``, in any case. Weekday 0 and 7 are both Sunday, and 7 is
the field's maximum, so ``1/2`` means Monday, Wednesday, Friday and Sunday.
The macros are ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
``@daily`` (``@midnight``) and ``@hourly``.

As in Vixie cron, when both day fields are restricted (neither starts with
``*``) a day matches if either one matches; otherwise it must match both.

The Gregorian calendar repeats every 400 years (146097 days, a whole number
of weeks), so the fire times repeat with that period too. Searches therefore
look at most 400 years away: an expression that fires at all fires within any
such window, and one that does not fire in a full cycle never fires, which
is what ``parse`` checks. A search only comes up empty at the ends of the
range ``datetime`` can represent (years 1 and 9999).
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from omnispindle.errors import CronExpressionError, ValidationError

CYCLE_YEARS = 400

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
        start=1,
    )
}
_WEEKDAY_NAMES = {
    name: number for number, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])
}

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int] = field(default_factory=dict)


_SECOND = _Field("second", 0, 59)
_FIVE_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day-of-week", 0, 7, _WEEKDAY_NAMES),
)


class _Invalid(Exception):
    """A problem in one field; ``parse`` adds the expression to the message."""


@dataclass(frozen=True, eq=False)
class _Schedule:
    """The parsed fields, as sorted values, plus the matching days per month shape."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    # (cron weekday of the 1st, days in the month) -> sorted matching days
    month_days: Mapping[tuple[int, int], tuple[int, ...]]

    def days_of(self, year: int, month: int) -> tuple[int, ...]:
        first, length = calendar.monthrange(year, month)
        return self.month_days[((first + 1) % 7, length)]  # Python counts from Monday

    def next_date(self, day: date, last_year: int) -> date | None:
        """First matching date on or after ``day``, up to the end of ``last_year``."""
        year, month, start = day.year, day.month, day.day
        while year <= last_year:
            if month in self.months:
                days = self.days_of(year, month)
                i = bisect_left(days, start)
                if i < len(days):
                    return date(year, month, days[i])
            later = _ceil(self.months, month + 1)
            year, month = (year, later) if later is not None else (year + 1, self.months[0])
            start = 1
        return None

    def previous_date(self, day: date, first_year: int) -> date | None:
        """Last matching date on or before ``day``, back to the start of ``first_year``."""
        year, month, end = day.year, day.month, day.day
        while year >= first_year:
            if month in self.months:
                days = self.days_of(year, month)
                i = bisect_right(days, end)
                if i > 0:
                    return date(year, month, days[i - 1])
            earlier = _floor(self.months, month - 1)
            year, month = (year, earlier) if earlier is not None else (year - 1, self.months[-1])
            end = 31
        return None

    def first_at_or_after(self, moment: datetime) -> datetime | None:
        """The first fire time at or after ``moment`` (UTC, whole seconds), within the window."""
        clock_fields = (self.hours, self.minutes, self.seconds)
        day, clock = moment.date(), (moment.hour, moment.minute, moment.second)
        last_year = min(day.year + CYCLE_YEARS, date.max.year)
        while (found := self.next_date(day, last_year)) is not None:
            hms = _ceil_tuple(clock_fields, clock if found == day else (0, 0, 0))
            if hms is not None:
                return _at(found, hms)
            if found == date.max:
                return None
            day, clock = found + timedelta(days=1), (0, 0, 0)
        return None

    def last_at_or_before(self, moment: datetime) -> datetime | None:
        """The last fire time at or before ``moment`` (UTC, whole seconds), within the window."""
        clock_fields = (self.hours, self.minutes, self.seconds)
        day, clock = moment.date(), (moment.hour, moment.minute, moment.second)
        first_year = max(day.year - CYCLE_YEARS, date.min.year)
        while (found := self.previous_date(day, first_year)) is not None:
            hms = _floor_tuple(clock_fields, clock if found == day else (23, 59, 59))
            if hms is not None:
                return _at(found, hms)
            if found == date.min:
                return None
            day, clock = found - timedelta(days=1), (23, 59, 59)
        return None


@dataclass(frozen=True)
class CronExpression:
    """A parsed cron expression; equal and hashed by its text."""

    text: str
    _schedule: _Schedule = field(init=False, repr=False, compare=False)
    _has_seconds: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = _split(self.text)
        object.__setattr__(self, "_has_seconds", len(fields) == 6)
        object.__setattr__(self, "_schedule", _build(self.text, fields))

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse ``text``, raising CronExpressionError if it is malformed or never fires."""
        return cls(text)

    @property
    def has_seconds(self) -> bool:
        """Whether the expression has a second field (six fields)."""
        return self._has_seconds

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment``, in UTC."""
        start = _utc_seconds(moment)
        found = None
        if start < datetime.max.replace(microsecond=0, tzinfo=timezone.utc):
            found = self._schedule.first_at_or_after(start + timedelta(seconds=1))
        if found is None:
            raise ValidationError(
                f"cron expression {self.text!r} has no fire time after {moment.isoformat()}"
                " within the years datetime supports"
            )
        return found

    def last_at_or_before(self, moment: datetime) -> datetime | None:
        """The latest fire time at or before ``moment``, in UTC, or None if there is none."""
        return self._schedule.last_at_or_before(_utc_seconds(moment))


def _utc_seconds(moment: datetime) -> datetime:
    """``moment`` in UTC, without its fraction of a second."""
    if not isinstance(moment, datetime):
        raise ValidationError(f"moment must be a datetime, got {type(moment).__name__}")
    if moment.utcoffset() is None:
        raise ValidationError(f"moment {moment.isoformat()} has no time zone; cron times are UTC")
    try:
        return moment.astimezone(timezone.utc).replace(microsecond=0)
    except OverflowError:
        raise ValidationError(
            f"moment {moment.isoformat()} is outside the years datetime supports"
        ) from None


def _split(text: object) -> list[str]:
    """The fields of ``text``, with macros expanded; checks only the shape."""
    if not isinstance(text, str):
        raise CronExpressionError(f"cron expression must be a string, got {type(text).__name__}")
    words = text.split()
    if not words:
        raise CronExpressionError("cron expression is empty")
    if words[0].startswith("@"):
        return _macro(text, words)
    if len(words) not in (5, 6):
        raise CronExpressionError(
            f"cron expression {text!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week)"
            f" or 6 (second first), got {len(words)}"
        )
    return words


def _macro(text: str, words: list[str]) -> list[str]:
    expansion = _MACROS.get(words[0].lower())
    if expansion is None:
        known = ", ".join(_MACROS)
        raise CronExpressionError(
            f"cron expression {text!r}: unsupported macro {words[0]!r}, expected one of {known}"
        )
    if len(words) > 1:
        raise CronExpressionError(
            f"cron expression {text!r}: macro {words[0]!r} takes no other fields"
        )
    return expansion.split()


def _build(text: str, words: list[str]) -> _Schedule:
    """The schedule of the already split ``words``; ``text`` is for messages."""
    specs = (_SECOND, *_FIVE_FIELDS) if len(words) == 6 else _FIVE_FIELDS
    try:
        values = [_parse_field(word, spec) for word, spec in zip(words, specs)]
    except _Invalid as exc:
        raise CronExpressionError(f"cron expression {text!r}: {exc}") from None
    seconds = values.pop(0) if len(words) == 6 else {0}
    minutes, hours, days, months, weekdays = values
    weekdays = {day % 7 for day in weekdays}  # 7 is Sunday too
    dom_word, dow_word = words[-3], words[-1]
    either = not dom_word.startswith("*") and not dow_word.startswith("*")
    schedule = _Schedule(
        tuple(sorted(seconds)),
        tuple(sorted(minutes)),
        tuple(sorted(hours)),
        tuple(sorted(months)),
        _month_days(days, weekdays, either),
    )
    # 2000-01-01 starts a 400-year cycle; nothing in one cycle means nothing ever.
    if schedule.first_at_or_after(datetime(2000, 1, 1, tzinfo=timezone.utc)) is None:
        raise CronExpressionError(
            f"cron expression {text!r} never fires: no month has a matching day"
        )
    return schedule


def _month_days(
    days: set[int], weekdays: set[int], either: bool
) -> dict[tuple[int, int], tuple[int, ...]]:
    """Matching days for every month shape: weekday of the 1st and month length."""
    table = {}
    for first in range(7):
        for length in range(28, 32):
            table[first, length] = tuple(
                day
                for day in range(1, length + 1)
                if _day_matches(day in days, (first + day - 1) % 7 in weekdays, either)
            )
    return table


def _day_matches(dom_ok: bool, dow_ok: bool, either: bool) -> bool:
    return dom_ok or dow_ok if either else dom_ok and dow_ok


def _parse_field(word: str, spec: _Field) -> set[int]:
    values: set[int] = set()
    for item in word.split(","):
        if not item:
            raise _Invalid(f"{spec.name} {word!r} has an empty list item")
        values.update(_parse_item(item, spec))
    return values


def _parse_item(item: str, spec: _Field) -> range:
    """One list item: ``*``, ``N``, ``A-B``, each optionally followed by ``/S``."""
    base, slash, step_text = item.partition("/")
    step = _step(step_text, item, spec) if slash else 1
    if base == "*":
        return range(spec.low, spec.high + 1, step)
    if "-" not in base:
        start = _value(base, item, spec)
        return range(start, (spec.high if slash else start) + 1, step)
    first, _, last = base.partition("-")
    low, high = _value(first, item, spec), _value(last, item, spec)
    if low > high:
        raise _Invalid(f"{spec.name} range {base!r} is not ascending")
    return range(low, high + 1, step)


def _step(text: str, item: str, spec: _Field) -> int:
    if not text:
        raise _Invalid(f"{spec.name} {item!r} is missing its step")
    if not _is_number(text):
        raise _Invalid(f"{spec.name} step {text!r} in {item!r} is not a number")
    if int(text) < 1:
        raise _Invalid(f"{spec.name} step {text!r} in {item!r} must be at least 1")
    return int(text)


def _value(text: str, item: str, spec: _Field) -> int:
    if not text:
        raise _Invalid(f"{spec.name} {item!r} is missing a value")
    if text.lower() in spec.names:
        return spec.names[text.lower()]
    if not _is_number(text):
        names = list(spec.names)
        kind = f" or a name {names[0]}-{names[-1]}" if names else ""
        raise _Invalid(f"{spec.name} {text!r} is not a number{kind}")
    number = int(text)
    if not spec.low <= number <= spec.high:
        raise _Invalid(f"{spec.name} {number} is out of range {spec.low}-{spec.high}")
    return number


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # int() would also take "٣", "+3" and "1_0"


def _ceil(values: Sequence[int], value: int) -> int | None:
    i = bisect_left(values, value)
    return values[i] if i < len(values) else None


def _floor(values: Sequence[int], value: int) -> int | None:
    i = bisect_right(values, value)
    return values[i - 1] if i > 0 else None


def _at(day: date, clock: tuple[int, ...]) -> datetime:
    """The moment ``clock`` (hour, minute, second) of ``day``, in UTC."""
    hour, minute, second = clock
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=timezone.utc)


def _ceil_tuple(
    fields: Sequence[Sequence[int]], current: tuple[int, ...]
) -> tuple[int, ...] | None:
    """The smallest tuple >= ``current`` whose parts come from ``fields`` (each sorted)."""
    kept = _matched_prefix(fields, current)
    if kept == len(fields):
        return current
    # Raise the first mismatching part or, failing that, an earlier one; reset the rest.
    # The mismatching part is not in its field, so "above it" and "at least it" agree.
    for i in range(kept, -1, -1):
        raised = _ceil(fields[i], current[i] + 1)
        if raised is not None:
            return (*current[:i], raised, *(values[0] for values in fields[i + 1 :]))
    return None


def _floor_tuple(
    fields: Sequence[Sequence[int]], current: tuple[int, ...]
) -> tuple[int, ...] | None:
    """The largest tuple <= ``current`` whose parts come from ``fields`` (each sorted)."""
    kept = _matched_prefix(fields, current)
    if kept == len(fields):
        return current
    for i in range(kept, -1, -1):
        lowered = _floor(fields[i], current[i] - 1)
        if lowered is not None:
            return (*current[:i], lowered, *(values[-1] for values in fields[i + 1 :]))
    return None


def _matched_prefix(fields: Sequence[Sequence[int]], current: tuple[int, ...]) -> int:
    """How many leading parts of ``current`` are in their fields."""
    kept = 0
    while kept < len(fields) and current[kept] in fields[kept]:
        kept += 1
    return kept
