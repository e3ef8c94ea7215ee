"""token keys stored encrypted: sealed with the site's secret key file they no longer fit 64
characters (the clear keys are sealed at the next start, by KeyRing.ensure)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 21:48:23.008826
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('fernet_keys', schema=None) as batch_op:
        batch_op.alter_column('key',
               existing_type=sa.VARCHAR(length=64),
               type_=sa.String(length=255),
               existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('fernet_keys', schema=None) as batch_op:
        batch_op.alter_column('key',
               existing_type=sa.String(length=255),
               type_=sa.VARCHAR(length=64),
               existing_nullable=False)
