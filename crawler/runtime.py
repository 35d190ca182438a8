"""The asyncio reactor Scrapy and APScheduler share.

Scrapy's reactor cannot be restarted in a process. The CLI and the tests therefore run it once,
in a background thread, and hand it coroutines (`run`); the daemon runs it in the main thread so
that it owns the signals (`run_main`). Never import apscheduler.schedulers.twisted: it installs
Twisted's default reactor as a side effect.
"""
from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any, Awaitable, Callable

ASYNCIO_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"

_thread: threading.Thread | None = None
_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def install_reactor() -> None:
    """Install the asyncio reactor once; fail loudly if another reactor got there first."""
    # Loads Scrapy (0.65 s measured), which a test or command that never crawls must not pay.
    from scrapy.utils.reactor import install_reactor as scrapy_install, is_asyncio_reactor_installed

    if "twisted.internet.reactor" in sys.modules:
        if not is_asyncio_reactor_installed():
            raise RuntimeError("a non-asyncio Twisted reactor is installed; postwatch needs the asyncio reactor")
        return
    scrapy_install(ASYNCIO_REACTOR)


def _reactor_loop() -> asyncio.AbstractEventLoop:
    """Start the reactor in a daemon thread (once) and return its event loop."""
    global _thread, _loop
    with _lock:
        if _loop is not None:
            return _loop
        install_reactor()
        from twisted.internet import reactor   # only after install_reactor(): importing it installs one

        _loop = reactor._asyncioEventloop
        started = threading.Event()
        reactor.callWhenRunning(started.set)
        _thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                   name="twisted-reactor", daemon=True)
        _thread.start()
        started.wait(10)
        return _loop


def run(async_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine function on the reactor's loop and return its result (or raise)."""
    loop = _reactor_loop()
    future = asyncio.run_coroutine_threadsafe(async_fn(), loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise


def run_here(async_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine function on a plain event loop in this thread; whatever in it must crawl
    is handed to the reactor (`on_reactor`), which starts only then. So a one-shot `check` whose
    sources all answer 304 never loads Scrapy or Twisted."""
    return asyncio.run(async_fn())


async def on_reactor(async_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Await `async_fn()` on the reactor's loop, from that loop or any other."""
    if _is_reactor_loop(asyncio.get_running_loop()):
        return await async_fn()
    # From a worker thread: Scrapy's install_reactor adopts the running loop of the thread it is
    # called in, and this one is not the reactor's.
    reactor_loop = await asyncio.to_thread(_reactor_loop)
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(async_fn(), reactor_loop))


def _is_reactor_loop(loop: asyncio.AbstractEventLoop) -> bool:
    reactor = sys.modules.get("twisted.internet.reactor")
    return reactor is not None and getattr(reactor, "_asyncioEventloop", None) is loop


def run_main(async_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run the reactor in this (main) thread until the coroutine function returns."""
    install_reactor()
    from twisted.internet import reactor   # only after install_reactor(): importing it installs one
    from twisted.internet.defer import Deferred

    outcome: dict[str, Any] = {}

    async def main():
        try:
            outcome["value"] = await async_fn()
        except BaseException as exc:  # handed back to the caller below
            outcome["error"] = exc
        finally:
            reactor.callLater(0, reactor.stop)

    reactor.callWhenRunning(lambda: Deferred.fromFuture(asyncio.ensure_future(main())))
    reactor.run(installSignalHandlers=False)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
