"""The process's heap once it has started."""

from __future__ import annotations

import gc

_settled = False


def settle_after_startup() -> None:
    """Collect once, then hide every object alive after startup from the cycle collector
    (`gc.freeze`): the modules, the app and its routes, SQLAlchemy's mappers and caches,
    several hundred thousand objects that live as long as the process. Otherwise every full
    collection walks them all again: on the 2-core test machine a pause of 100-200 ms in the
    first seconds of a burst of webhooks (tests/bench/channel_burst.py).

    Once per process: frozen objects are never collected, so a process that builds several
    apps (the test suite) freezes only what the first one left alive. Reference counting still
    frees them as usual."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
