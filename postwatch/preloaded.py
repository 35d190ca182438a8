"""The config a quick `postwatch check` pass read (postwatch.oneshot), handed to the full command
that follows in the same process (postwatch.cli), so the file is not read and validated twice.

Its own module, importing nothing, so that neither of the two imports the other for it."""
from __future__ import annotations

# (--config argument, Config) of the quick pass, until the full command takes it.
_kept: tuple[str | None, object] | None = None


def keep(explicit: str | None, config: object) -> None:
    """The quick pass read `config` from `explicit` (the --config argument, or None)."""
    global _kept
    _kept = (explicit, config)


def discard() -> None:
    """The quick pass answered the command: no full command follows."""
    global _kept
    _kept = None


def take(explicit: str | None):
    """The config the quick pass of this process read from `explicit`, once; None if it read none."""
    global _kept
    if _kept is None or _kept[0] != explicit:
        return None
    config, _kept = _kept[1], None
    return config
