"""The FastAPI application: `uvicorn app.main:app`, or `create_app(settings)` in tests.

Migrations are not run here: `finetune serve` applies them before it serves.
"""

from __future__ import annotations

from fastapi import FastAPI

from .api import api_router
from .error_handlers import install_error_handlers
from .settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="finetune-service",
        version="0.1.0",
        description="Fine-tune PyTorch models over REST. Authenticate with `Authorization: Bearer <key>` when keys exist.",
        # served by app.docs instead, behind the API-key rule (only /health stays open)
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings or get_settings()
    app.state.store = None  # built on first use (deps.get_artifact_store)
    install_error_handlers(app)
    app.include_router(api_router)
    return app


app = create_app()
