"""jobs: unique idempotency key among open-mode jobs (owner NULL), which the (owner, key) constraint misses

Revision ID: 0004_api_jobs_open_idempotency
Revises: 0003_datasets_open_idempotency
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004_api_jobs_open_idempotency"
down_revision: Union[str, None] = "0003_datasets_open_idempotency"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index(
        "uq_jobs_idempotency_key_no_owner",
        "jobs",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("owner IS NULL"),
        sqlite_where=sa.text("owner IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_idempotency_key_no_owner", table_name="jobs")
