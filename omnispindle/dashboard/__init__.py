"""A web dashboard of a queue: counts, charts, workers, tasks, workflows, schedules,
and the actions retry and cancel.

Serve it with ``omnispindle dashboard``, or mount it in a Starlette or FastAPI app::

    from omnispindle.dashboard import TokenAuth, app

    site.mount("/tasks", app(dsn="postgresql://app@db/app", auth=TokenAuth("s3cret")))

It needs the extra ``omnispindle[dashboard]``; the library itself never imports it.
"""

from omnispindle.dashboard.application import app
from omnispindle.dashboard.security import BasicAuth, TokenAuth
from omnispindle.dashboard.serving import check_bind, serve

__all__ = ["BasicAuth", "TokenAuth", "app", "check_bind", "serve"]
