"""Predictions: try a finished job's checkpoint on new inputs (POST /jobs/{id}/predict), run by a worker."""
