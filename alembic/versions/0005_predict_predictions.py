"""predictions: POST /jobs/{id}/predict requests and the worker's answers

Revision ID: 0005_predict_predictions
Revises: 0004_api_jobs_open_idempotency
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = "0005_predict_predictions"
down_revision: Union[str, None] = "0004_api_jobs_open_idempotency"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("checkpoint_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=True),
        sa.Column("error_type", sa.String(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_predictions_job_id_created_at", "predictions", ["job_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_predictions_job_id_created_at", table_name="predictions")
    op.drop_table("predictions")
