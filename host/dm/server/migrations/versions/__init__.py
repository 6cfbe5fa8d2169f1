"""Alembic revisions, one file each (0001_baseline.py first)."""
