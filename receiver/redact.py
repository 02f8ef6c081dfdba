"""Keep credentials out of every log line, response body and repr.

A tracking URI may carry them (`http://user:password@host`), and MLflow names the URL in its
error texts, so any text that leaves the process passes through `scrub` first.
"""

from __future__ import annotations

import logging

# Masking shared with the plugin's settings: one implementation for both packages.
from mlflow_hotswap_plugin.env import MASK as MASK
from mlflow_hotswap_plugin.env import scrub as scrub
from mlflow_hotswap_plugin.env import uri as uri


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
