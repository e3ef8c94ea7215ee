"""servers' lifetimes: expiry, the limit that applied and why, the warning sent, exemption

When a server expires (None: it lives until deleted), the limit that applied when it was
created and why, the expiry its warning was sent for, and who exempted it.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 04:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('lifetime_limit', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('lifetime_reason', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('expiry_warned_for', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('exempted_by', sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_expires_at'), ['expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_expires_at'))
        batch_op.drop_column('exempted_by')
        batch_op.drop_column('expiry_warned_for')
        batch_op.drop_column('lifetime_reason')
        batch_op.drop_column('lifetime_limit')
        batch_op.drop_column('expires_at')
