"""How this package's connections read values: jsonb that Python cannot decode stays a value.

The adapters apply only to connections Omnispindle opens (``context=ADAPTERS``),
never to the application's own.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.adapt import AdaptersMap
from psycopg.types.json import set_json_loads

from omnispindle._core.unreadable import UnreadableJson


def _loads(data: str | bytes) -> Any:
    """``json.loads``, except that a value too deep for Python becomes an ``UnreadableJson``."""
    try:
        return json.loads(data)
    except RecursionError:
        return UnreadableJson(len(data), "nested deeper than Python's JSON decoder can follow")
    except ValueError as exc:
        return UnreadableJson(len(data), f"not JSON Python can decode ({exc})")


ADAPTERS = AdaptersMap(psycopg.adapters)
set_json_loads(_loads, ADAPTERS)
