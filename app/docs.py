"""The OpenAPI document and the Swagger UI, behind the same API-key rule as every route but /health.

FastAPI's own /openapi.json and /docs take no dependencies, so the app turns them off and serves them
here: open while no key exists (single-user mode), `Authorization: Bearer <key>` once one does.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from .deps import get_owner

router = APIRouter(include_in_schema=False, dependencies=[Depends(get_owner)])


@router.get("/openapi.json")
def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - docs")
