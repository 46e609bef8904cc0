"""Alembic migrations of the ledger (`sms-dispatch db upgrade`)."""
