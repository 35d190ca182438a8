"""The console beside a cluster worker (`postwatch worker` with [console] listen set): in cluster
mode no `postwatch run` daemon serves it, so each worker offers it on its own loop. The first
worker of a machine to bind the address serves it; another on the same machine goes on without
it (one line in its log). "Check now" and "retry now" need no wake-up call here: they set the
source's next check and the message's next attempt to now, which the cluster's planners and its
outbox job read."""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

log = logging.getLogger("postwatch.console")


async def serve_with_console(app, serve: Callable[[], Awaitable[int]]) -> int:
    """`serve()` (a worker's), with the console of `app` on [console] listen while it runs."""
    from postwatch.console.pages import make_console_app
    from postwatch.web import WebEndpoint

    host, port = app.config.console_address()
    console = WebEndpoint(app, host, port, max_connections=64, factory=make_console_app)
    try:
        await console.start()
    except OSError as exc:
        log.warning("no operator's console from this worker: cannot listen on %s:%s ([console] listen): %s "
                    "(another worker on this machine may serve it)", host, port, exc.strerror or exc)
        return await serve()
    log.info("operator's console on http://%s/", console.address)
    try:
        return await serve()
    finally:
        await console.stop()
