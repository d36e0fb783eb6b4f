"""etl.db.SCHEMA_HEAD (what commands check without loading alembic) is the migrations' head."""

from __future__ import annotations

from etl import db


def test_schema_head_matches_migration_scripts(tmp_path):
    assert db.head_revision(f"sqlite:///{tmp_path / 'x.db'}") == db.SCHEMA_HEAD
