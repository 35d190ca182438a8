"""Stopping, for both runtimes: SIGTERM and SIGINT owned by the process's event loop while it
serves (`postwatch run`'s Daemon.serve, `postwatch worker`'s Worker.serve), and the grace
period, [daemon] shutdown_grace, in which what runs may finish."""
from __future__ import annotations

import asyncio
import signal
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A daemon whose lease was lost stops at once: another may take over soon.
LEASE_LOST_GRACE = 2.0


@contextmanager
def stop_signals(loop: asyncio.AbstractEventLoop, on_stop: Callable[[signal.Signals], None], *,
                 second_kills: bool = False) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT call `on_stop(signal)` on `loop`. With
    `second_kills`, the first of them hands both back to the default action, so that a second
    signal ends the process at once."""
    def received(signum: signal.Signals) -> None:
        if second_kills:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
        on_stop(signum)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, received, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def grace_seconds(shutdown_grace: timedelta, *, lease_lost: bool = False) -> float:
    """The seconds a stopping process gives its running work ([daemon] shutdown_grace), one
    grace for crawls and sending together; a daemon that lost its lease gives at most 2 s."""
    grace = shutdown_grace.total_seconds()
    return min(grace, LEASE_LOST_GRACE) if lease_lost else grace
