"""The transactional outbox's tables, and the notifications delivered about transfers.

flask_uow_outbox, flask_uow_outbox_keys and flask_uow_inbox are the tables ``db.outbox``
adds to the ledger's metadata (spelled out here, as they were when this revision was
written); notification_deliveries is what ``transfer.completed`` consumers record.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flask_uow_outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("task", sa.String(length=255), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("key_seq", sa.BigInteger(), nullable=True),
        sa.Column("queue", sa.String(length=255), nullable=True),
        sa.Column("countdown", sa.Double(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("available_at", sa.Double(), nullable=False),
        sa.Column("leased_until", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("parked", sa.Boolean(), nullable=False),
        sa.Column("published_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_flask_uow_outbox")),
        sa.UniqueConstraint("id", name=op.f("uq_flask_uow_outbox_id")),
    )
    op.create_index("flask_uow_outbox_key_order", "flask_uow_outbox", ["key", "key_seq"])
    op.create_index(
        "flask_uow_outbox_pending", "flask_uow_outbox", ["published_at", "parked", "available_at"]
    )
    op.create_table(
        "flask_uow_outbox_keys",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_flask_uow_outbox_keys")),
    )
    op.create_table(
        "flask_uow_inbox",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("task", sa.String(length=255), nullable=False),
        sa.Column("processed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flask_uow_inbox")),
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transfer_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("delivered_by", sa.String(length=32), nullable=False),
        sa.Column(
            "delivered_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["transfer_id"],
            ["transfers.id"],
            name=op.f("fk_notification_deliveries_transfer_id_transfers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint("transfer_id", "kind", name="uq_notification_deliveries_transfer_kind"),
    )


def downgrade() -> None:
    op.drop_table("notification_deliveries")
    op.drop_table("flask_uow_inbox")
    op.drop_table("flask_uow_outbox_keys")
    op.drop_table("flask_uow_outbox")  # its indexes go with it
