"""servers' access addresses (accessIPv4/accessIPv6 as given on create or update) and the
password a guest posted (os-server-password)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-09 00:15:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('access_ipv4', sa.String(length=45), nullable=True))
        batch_op.add_column(sa.Column('access_ipv6', sa.String(length=45), nullable=True))
        batch_op.add_column(sa.Column('server_password', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('server_password')
        batch_op.drop_column('access_ipv6')
        batch_op.drop_column('access_ipv4')
