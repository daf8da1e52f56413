"""datasets: Idempotency-Key unique in open mode too (owner NULL), where the (owner, key) constraint cannot see

Revision ID: 0003_datasets_open_idempotency
Revises: 0002_datasets_column_types
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003_datasets_open_idempotency"
down_revision: Union[str, None] = "0002_datasets_column_types"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index(
        "uq_datasets_open_idempotency_key",
        "datasets",
        ["idempotency_key"],
        unique=True,
        sqlite_where=sa.text("owner IS NULL"),
        postgresql_where=sa.text("owner IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_datasets_open_idempotency_key", table_name="datasets")
