"""Say what is dropped when the process ends, and start afresh in a forked child.

Installed by the store when it is built (`watch`), not at import: a test, the CLI or a script
that imports the plugin gets no hook it did not ask for. When the last watched notifier is
released (`unwatch`, the store's `close()`), the atexit hook and the SIGTERM handler in place
before are restored. A fork hook cannot be removed: once registered, it only resets the
notifiers still watched.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from mlflow_hotswap_plugin import compat

if TYPE_CHECKING:
    from mlflow_hotswap_plugin.notifier import Notifier

EXIT_GRACE = 5.0  # at most this long (and at most HOTSWAP_TIMEOUT) at exit for deliveries

_lock = threading.Lock()
_watched: list[Notifier] = []
_fork_hook_registered = False
_previous_sigterm: Any = None  # the handler ours wraps, while ours is installed


def watch(notifier: Notifier) -> None:
    """Close `notifier` at exit (atexit and SIGTERM) and reset it in a forked child."""
    global _fork_hook_registered
    with _lock:
        first = not _watched
        if notifier not in _watched:
            _watched.append(notifier)
        if first:
            atexit.register(close_all, EXIT_GRACE)
            if not _fork_hook_registered:
                os.register_at_fork(after_in_child=_after_fork_in_child)
                _fork_hook_registered = True
    if first:  # outside the lock: the main thread may be waiting for it in close_all
        compat.call_in_main_thread(_hook_sigterm)


def unwatch(notifier: Notifier) -> None:
    """Forget `notifier`; with none left, put back what `watch` replaced."""
    with _lock:
        if notifier in _watched:
            _watched.remove(notifier)
        last = not _watched
        if last:
            atexit.unregister(close_all)
    if last:
        compat.call_in_main_thread(_unhook_sigterm)


def watched() -> list[Notifier]:
    with _lock:
        return list(_watched)


def close_all(grace: float) -> None:
    """Close every watched notifier that has emitted, all within one `grace` period."""
    deadline = time.monotonic() + grace
    for notifier in watched():
        if notifier.emitted:
            left = max(0.0, deadline - time.monotonic())
            notifier.close(min(left, notifier.settings.timeout))


def _after_fork_in_child() -> None:
    for notifier in _watched:  # one thread in the child: no lock needed (it may be held)
        notifier.after_fork()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Give deliveries EXIT_GRACE seconds and log what is left, then do what was done before.

    atexit never runs on SIGTERM under uvicorn (which serves MLflow 3.x): it re-raises the
    signal with the default action once it has shut down.
    """
    previous = _previous_sigterm
    close_all(EXIT_GRACE)
    if callable(previous):
        previous(signum, frame)
    else:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def _hook_sigterm() -> None:
    """In the main thread (signal handlers belong there): wrap the SIGTERM handler."""
    global _previous_sigterm
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous == signal.SIG_IGN or previous is _on_sigterm:
        return  # set outside Python, ignored on purpose, or ours already: leave it alone
    _previous_sigterm = previous
    signal.signal(signal.SIGTERM, _on_sigterm)


def _unhook_sigterm() -> None:
    global _previous_sigterm
    if _previous_sigterm is None:
        return
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:  # nobody replaced ours since
        signal.signal(signal.SIGTERM, _previous_sigterm)
    _previous_sigterm = None
