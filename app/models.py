"""Every table, imported in one place so Alembic's metadata sees them all."""

from .datasets.models import Dataset
from .db import Base
from .jobs.models import Checkpoint, Job, JobDataset, JobEvent, MetricPoint
from .keys.models import ApiKey
from .predictions.models import Prediction
from .workers.models import Worker

__all__ = ["ApiKey", "Base", "Checkpoint", "Dataset", "Job", "JobDataset", "JobEvent", "MetricPoint", "Prediction", "Worker"]
