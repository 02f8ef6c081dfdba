"""Retryable: the base of every error after which the same request may well succeed soon.

errors.py answers each with its `retry_after` as the Retry-After header.
"""

from __future__ import annotations


class Retryable(Exception):
    """A refusal for now, not for good: the client may send the same request again in
    `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
