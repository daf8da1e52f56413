"""Every router of the API. Resource routers require the owner (API key) dependency."""

from fastapi import APIRouter, Depends

from . import health
from .datasets import endpoints as datasets
from .deps import get_owner
from .jobs import endpoints as jobs

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(jobs.router, dependencies=[Depends(get_owner)])
api_router.include_router(datasets.router, dependencies=[Depends(get_owner)])
