"""HTTP endpoints of uploaded datasets (POST/GET/DELETE /datasets)."""

from fastapi import APIRouter

router = APIRouter(prefix="/datasets", tags=["datasets"])
