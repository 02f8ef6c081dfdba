"""Keep credentials out of every log line, response body and repr.

A tracking URI may carry them (`http://user:password@host`), and MLflow names the URL in its
error texts, so any text that leaves the process passes through `scrub` first.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# `scheme://userinfo@`: whatever sits between `://` and the first `@` of the authority.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s]*)@")


def uri(value: str | None) -> str | None:
    """`value` with the password of its userinfo masked: `http://user:***@host/`."""
    if not value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return scrub(value)
    if parts.password is None and parts.username is None:
        return scrub(value)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def scrub(text: str) -> str:
    """`text` with the userinfo of every URL in it masked (user kept, password hidden)."""
    return _USERINFO.sub(_mask_userinfo, text)


def _mask_userinfo(match: re.Match[str]) -> str:
    user = match.group("userinfo").partition(":")[0]
    return f"{match.group('scheme')}{user}:{MASK}@"


class ScrubFilter(logging.Filter):
    """A handler filter: the message and any traceback of a record, scrubbed.

    On a handler (not a logger) so it sees every record that handler writes, whichever logger
    (ours, MLflow's, uvicorn's) made it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
            record.exc_info = None  # the scrubbed text stands for it
        return True


def install_log_filter() -> None:
    """Scrub every record written by the root logger's handlers and MLflow's own (it does not
    propagate); uvicorn's handlers get the filter from their logging config."""
    for handler in [*logging.getLogger().handlers, *logging.getLogger("mlflow").handlers]:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())
