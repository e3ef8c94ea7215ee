"""pool commands (a standby pool's writes for the active one), pool requests' idempotency keys

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-08 00:14:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pool_commands',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=True),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pool_commands'))
    )
    with op.batch_alter_table('pool_commands', schema=None) as batch_op:
        batch_op.create_index('ix_pool_commands_state', ['state', 'id'], unique=False)
    with op.batch_alter_table('pool_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_pool_requests_idempotency', ['requestor', 'idempotency_key'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pool_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_pool_requests_idempotency')
        batch_op.drop_column('idempotency_key')
    op.drop_table('pool_commands')
