"""Every router of the API. Resource routers require the owner (API key) dependency; every route refuses
unknown query parameters."""

from fastapi import APIRouter, Depends

from . import docs, health
from .datasets import endpoints as datasets
from .deps import get_owner
from .jobs import endpoints as jobs
from .predictions import endpoints as predictions
from .strict_query import reject_unknown_query_parameters
from .workers import endpoints as workers

api_router = APIRouter(dependencies=[Depends(reject_unknown_query_parameters)])
api_router.include_router(health.router)
api_router.include_router(docs.router)
api_router.include_router(jobs.router, dependencies=[Depends(get_owner)])
api_router.include_router(predictions.router, dependencies=[Depends(get_owner)])
api_router.include_router(datasets.router, dependencies=[Depends(get_owner)])
api_router.include_router(workers.router, dependencies=[Depends(get_owner)])
