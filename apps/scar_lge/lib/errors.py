"""The user-error type every module raises, and its HTTP answer."""

from __future__ import annotations

from fastapi import HTTPException


class InputError(ValueError):
    """A user's input that cannot be used; the message says why. Maps to an HTTP 4xx."""

    def __init__(self, message: str, status_code: int = 422):
        super().__init__(message)
        self.status_code = status_code


def as_http(error: InputError, what: str) -> HTTPException:
    """``error`` as the HTTP answer a client sees: its status, and ``what`` failed followed by why."""
    return HTTPException(status_code=error.status_code, detail=f"{what}: {error}")
