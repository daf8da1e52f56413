"""The queue side: the Celery app, the run_job task, and the training core (worker.training)."""
