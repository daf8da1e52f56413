"""One error hierarchy: each carries its HTTP status; one handler renders them as {"detail": ...}."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: Any) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class Unprocessable(AppError):
    """A semantically invalid request: detail names the field, like FastAPI's own 422s."""

    status_code = 422

    def __init__(self, loc: list[str | int], msg: str, type: str = "value_error") -> None:
        super().__init__([{"loc": loc, "msg": msg, "type": type}])


class PayloadTooLarge(AppError):
    status_code = 413


class Unauthorized(AppError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class TooManyRequests(AppError):
    status_code = 429


class ServiceUnavailable(AppError):
    status_code = 503
