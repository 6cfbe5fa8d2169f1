"""Alembic migrations of the DM server's database (run by host.dm.server.migrate)."""
