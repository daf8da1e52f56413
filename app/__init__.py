"""The HTTP side: FastAPI endpoints and SQL persistence."""
