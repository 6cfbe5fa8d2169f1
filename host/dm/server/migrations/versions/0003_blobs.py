"""blobs: backup chunks stored once by SHA-256; backups.parts, retired_backups.parts

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('refs', sa.Integer(), nullable=False),
    sa.Column('dead_since', sa.Float(), nullable=True),
    sa.Column('data', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_blobs_dead_since'), ['dead_since'], unique=False)

    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parts', sa.JSON(), nullable=True))

    with op.batch_alter_table('retired_backups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parts', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('retired_backups', schema=None) as batch_op:
        batch_op.drop_column('parts')

    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.drop_column('parts')

    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_blobs_dead_since'))

    op.drop_table('blobs')
