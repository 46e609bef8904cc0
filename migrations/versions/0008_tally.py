"""campaign tally: per-status counts and cost kept by triggers

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# PostgreSQL: statement triggers with transition tables, one delta row per campaign and status
# a statement touched (an update that moves no status and no cost adds nothing).
_PG = [
    """
    CREATE FUNCTION sms_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO campaign_tally (campaign_id, status, n, cost)
      SELECT campaign_id, status, count(*), coalesce(sum(cost), 0)
      FROM new_rows GROUP BY campaign_id, status;
      RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION sms_tally_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO campaign_tally (campaign_id, status, n, cost)
      SELECT campaign_id, status, sum(n), sum(cost) FROM (
        SELECT campaign_id, status, 1 AS n, coalesce(cost, 0) AS cost FROM new_rows
        UNION ALL
        SELECT campaign_id, status, -1, -coalesce(cost, 0) FROM old_rows
      ) AS delta
      GROUP BY campaign_id, status
      HAVING sum(n) <> 0 OR sum(cost) <> 0;
      RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION sms_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO campaign_tally (campaign_id, status, n, cost)
      SELECT campaign_id, status, -count(*), -coalesce(sum(cost), 0)
      FROM old_rows GROUP BY campaign_id, status;
      RETURN NULL;
    END $$
    """,
    """CREATE TRIGGER message_tally_insert AFTER INSERT ON message
       REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sms_tally_insert()""",
    """CREATE TRIGGER message_tally_update AFTER UPDATE ON message
       REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION sms_tally_update()""",
    """CREATE TRIGGER message_tally_delete AFTER DELETE ON message
       REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION sms_tally_delete()""",
]

# SQLite has row triggers only (one writer at a time, so no one waits on them either).
_SQLITE = [
    """CREATE TRIGGER message_tally_insert AFTER INSERT ON message BEGIN
       INSERT INTO campaign_tally (campaign_id, status, n, cost)
       VALUES (NEW.campaign_id, NEW.status, 1, coalesce(NEW.cost, 0)); END""",
    """CREATE TRIGGER message_tally_update AFTER UPDATE OF status, cost ON message
       WHEN OLD.status IS NOT NEW.status OR OLD.cost IS NOT NEW.cost BEGIN
       INSERT INTO campaign_tally (campaign_id, status, n, cost)
       VALUES (OLD.campaign_id, OLD.status, -1, -coalesce(OLD.cost, 0));
       INSERT INTO campaign_tally (campaign_id, status, n, cost)
       VALUES (NEW.campaign_id, NEW.status, 1, coalesce(NEW.cost, 0)); END""",
    """CREATE TRIGGER message_tally_delete AFTER DELETE ON message BEGIN
       INSERT INTO campaign_tally (campaign_id, status, n, cost)
       VALUES (OLD.campaign_id, OLD.status, -1, -coalesce(OLD.cost, 0)); END""",
]


def upgrade() -> None:
    op.create_table(
        "campaign_tally",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            nullable=False,
        ),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Numeric(16, 5), nullable=False),
    )
    op.create_index("ix_campaign_tally_campaign_id", "campaign_tally", ["campaign_id"])
    # What the ledger already holds, then the triggers keep it.
    op.execute(
        "INSERT INTO campaign_tally (campaign_id, status, n, cost) "
        "SELECT campaign_id, status, count(*), coalesce(sum(cost), 0) FROM message "
        "GROUP BY campaign_id, status"
    )
    for statement in _PG if op.get_bind().dialect.name == "postgresql" else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS message_tally_{name} ON message"
                   if op.get_bind().dialect.name == "postgresql"
                   else f"DROP TRIGGER IF EXISTS message_tally_{name}")  # fmt: skip
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP FUNCTION IF EXISTS sms_tally_{name}()")
    op.drop_index("ix_campaign_tally_campaign_id", table_name="campaign_tally")
    op.drop_table("campaign_tally")
