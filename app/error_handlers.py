"""One place that turns exceptions into responses, all shaped {"detail": ...}.

- AppError: its own status and detail (business errors are never 500s).
- FastAPI's RequestValidationError keeps its default 422 with loc/msg/type; a body FastAPI cannot even
  decode (not UTF-8) is the same 422 json_invalid, not its generic 400.
- A database that cannot be reached (or is locked): 503, so clients retry instead of giving up.
- Values the database refuses (out of range): 422.
- The artifact store failing: 503.
- Anything else: 500, logged with its traceback (a bug; tests and fuzzing hunt for these).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .errors import AppError
from .storage import StorageError

log = logging.getLogger("app.errors")


def _json(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _app_error(_: Request, exc: AppError) -> JSONResponse:
    return _json(exc.status_code, exc.detail, exc.headers)


async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
    if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
        log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
        return _json(503, "database unavailable; try again shortly", {"Retry-After": "5"})
    if isinstance(exc, DataError):
        return _json(422, "a value is out of range for the database")
    log.exception("database error during %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, "internal server error")


async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
    log.warning("database connection pool exhausted during %s %s", request.method, request.url.path)
    return _json(503, "database busy; try again shortly", {"Retry-After": "5"})


async def _storage_error(request: Request, exc: StorageError) -> JSONResponse:
    log.warning("artifact store error during %s %s: %s", request.method, request.url.path, exc)
    return _json(503, "artifact store unavailable; try again shortly", {"Retry-After": "5"})


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    # FastAPI answers 400 "There was an error parsing the body" when a body cannot be decoded at all
    # (invalid UTF-8); a malformed body is a 422 like any other JSON that does not parse.
    if exc.status_code == 400 and isinstance(exc.__cause__, (UnicodeDecodeError, ValueError)):
        return _json(422, [{"loc": ["body"], "msg": "the body is not valid UTF-8 JSON", "type": "json_invalid"}])
    return await http_exception_handler(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error during %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(AppError, _app_error)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(PoolTimeout, _pool_timeout)  # type: ignore[arg-type]
    app.add_exception_handler(StorageError, _storage_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
