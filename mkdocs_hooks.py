"""MkDocs hook for the documentation site: the API reference names public modules only.

mkdocstrings renders a name it cannot link (a default value such as a
module-level constant, an annotation of an internal type) with its full
dotted path as a hover title. Internal modules move between releases, so for
names defined there the title goes and the name alone is shown.
"""

from __future__ import annotations

import re
from typing import Any

PUBLIC_MODULES = (
    "task_queue",
    "client",
    "async_client",
    "worker",
    "errors",
    "context",
    "states",
    "schema",
    "migrate",
    "registry",
    "prometheus",
    "dashboard",
)

_INTERNAL_TITLE = re.compile(
    r'<span title="omnispindle\.(?!(?:{})\.)[\w.]+">([^<]*)</span>'.format("|".join(PUBLIC_MODULES))
)


def on_post_page(output: str, page: Any, config: Any) -> str:
    return _INTERNAL_TITLE.sub(r"\1", output)
