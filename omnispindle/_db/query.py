"""What the database seam runs: queries, plans of several, transactions, pipelines.

An operation is plain data and plain logic, with no connection in sight, so
that the blocking :class:`~omnispindle._db.pool.Database` and the asyncio
:class:`~omnispindle._db.async_pool.AsyncDatabase` run the very same one:

- :class:`Query`: one statement, its parameters, and how its rows become a result;
- a plan: a generator that yields queries, is sent each one's result, and
  returns the operation's result (several round trips on one connection);
- :class:`Atomic`: a plan run in one transaction (a savepoint inside the caller's);
- :class:`Pipelined`: queries sent one after another without waiting, in one
  transaction, while the caller's generator makes the next.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, Union

from omnispindle._db.statements import Statement

T = TypeVar("T")
R = TypeVar("R")
# Operations only produce their results: a query of rows of a kind is a query
# of rows of any wider kind.
T_co = TypeVar("T_co", covariant=True)

# A row as psycopg's dict_row returns it; the typed readers say what it holds.
Row = dict[str, Any]
Params = Mapping[str, object]
# Yields queries, is sent each one's result, returns the operation's result.
Plan = Generator["Query[Any]", Any, T]


@dataclass(frozen=True, slots=True)
class Query(Generic[T_co]):
    """One statement with its parameters, and the reader of its rows."""

    statement: Statement
    params: Params | None
    read: Callable[[list[Row]], T_co]


@dataclass(frozen=True, slots=True)
class Atomic(Generic[T_co]):
    """A plan that runs in one transaction: all of it, or none of it."""

    plan: Plan[T_co]


@dataclass(frozen=True, slots=True)
class Pipelined(Generic[R, T_co]):
    """Queries pipelined in one transaction (all or nothing); ``combine`` gets their
    results in order. ``queries`` may be a generator: an exception from it rolls
    everything back."""

    queries: Iterable[Query[R]]
    combine: Callable[[list[R]], T_co]


Operation = Union[Query[T], Atomic[T], "Pipelined[Any, T]", Plan[T]]


class Runner(Protocol):
    """Anything that runs operations: ``Database``, or a stand-in in a unit test."""

    def run(self, operation: Operation[T]) -> T:
        """Run ``operation`` and return its result."""


def then(query: Query[T], convert: Callable[[T], R]) -> Query[R]:
    """The same query, its result passed through ``convert``."""
    read = query.read
    return Query(query.statement, query.params, lambda found: convert(read(found)))


def rows(found: list[Row]) -> list[Any]:
    """Every row as it came: the query's declared type says what a row holds."""
    return found


def first(found: list[Row]) -> Any:
    """The one row a statement always returns."""
    return found[0]


def first_or_none(found: list[Row]) -> Any:
    """The row of a statement that returns one row or none."""
    return found[0] if found else None


def nothing(found: list[Row]) -> None:
    """For statements whose rows, if any, nobody needs."""


def column(name: str) -> Callable[[list[Row]], list[Any]]:
    """A reader of one column of every row."""
    return lambda found: [row[name] for row in found]


def value(name: str) -> Callable[[list[Row]], Any]:
    """A reader of one column of the one row a statement always returns."""
    return lambda found: found[0][name]
