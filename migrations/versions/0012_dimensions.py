"""users, lines and contacts: names beside every call, and the daily views analysts open first

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-07

Issue 24.  ``users``, ``phone_numbers`` (the workspace's lines) with
``phone_number_users`` (who is on each), ``contacts`` with
``contact_phone_numbers`` (and the E.164 form calls are matched on),
``contact_emails`` and ``contact_custom_fields``; each parent row knows when it
was first and last seen and when it went (kept, marked ``gone_at``).
``dimension_refreshes`` records what each refresh cost.  Views:
``contact_number_matches`` (the one contact a number stands for, by the rule of
docs/schema.md "Matching"), ``call_overview`` recreated with names appended
(its existing columns keep their place), ``call_party_overview`` (one row per
party of a call), ``daily_user_stats`` and ``daily_line_stats`` (by the call's
UTC day).  Written per dialect only where SQL has no common spelling, with
0004's pieces.  The coordinator re-chains this revision after main's head.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0012'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision(file_name: str) -> ModuleType:
    """An earlier revision's module, for its view texts and dialect pieces (one spelling of each).

    Loaded from its file: a revision module's name starts with a digit and is not importable.
    """
    spec = importlib.util.spec_from_file_location(f"_rev_{file_name[:4]}", Path(__file__).with_name(file_name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The one contact an E.164 number stands for: present contacts before gone ones, then the most
# recently updated (an unknown updatedAt last), then the smallest id.  docs/schema.md "Matching".
# A correlated lookup on ix_contact_phone_numbers_number_e164 (a few rows per number), not a window
# over every contact: MariaDB would scan the materialised window once per call.
def _pick_contact(number: str) -> str:
    return ("(SELECT cpn.contact_id FROM contact_phone_numbers cpn JOIN contacts pick "  # noqa: S608
            "ON pick.contact_id = cpn.contact_id "
            f"WHERE cpn.number_e164 = {number} "
            "ORDER BY CASE WHEN pick.gone_at IS NULL THEN 0 ELSE 1 END, "
            "CASE WHEN pick.updated_at IS NULL THEN 1 ELSE 0 END, pick.updated_at DESC, pick.contact_id LIMIT 1)")


def _contacts_with(number: str) -> str:
    return ("(SELECT COUNT(DISTINCT cpn.contact_id) FROM contact_phone_numbers cpn "  # noqa: S608
            f"WHERE cpn.number_e164 = {number})")


_CONTACT_NUMBER_MATCHES = f"""\
CREATE VIEW contact_number_matches AS
SELECT n.number_e164, {_pick_contact("n.number_e164")} AS contact_id,
       COUNT(DISTINCT n.contact_id) AS contacts_with_number
FROM contact_phone_numbers n
WHERE n.number_e164 IS NOT NULL
GROUP BY n.number_e164"""  # noqa: S608

# Who handled a call: a stored user; the AI agent (a system actor SYU..., or aiHandled without a user);
# an id no users row has ("unknown user"); or nobody (NULL).
_AGENT = "(SUBSTR(c.actor_id, 1, 3) = 'SYU' OR (c.user_id IS NULL AND c.ai_handled = 'ai-agent'))"
_USER_KIND = (f"CASE WHEN u.user_id IS NOT NULL THEN 'user' WHEN {_AGENT} THEN 'agent' "
              "WHEN COALESCE(c.user_id, c.actor_id) IS NOT NULL THEN 'unknown user' END")
_USER_NAME = f"CASE WHEN u.user_id IS NOT NULL THEN COALESCE(u.name, u.email) WHEN {_AGENT} THEN 'AI agent' END"
# The other party: the first participant that is not the workspace's own (v1 lists only those).
_OUTSIDE = "p.actor_id IS NULL AND (p.is_own_number IS NULL OR NOT p.is_own_number)"

# Views are built from this module's own constants, never from input.
_NAME_JOINS = f"""\
LEFT JOIN users u ON u.user_id = COALESCE(c.user_id, c.actor_id)
LEFT JOIN phone_numbers pn ON pn.phone_number_id = c.phone_number_id
LEFT JOIN call_participants op ON op.call_id = c.call_id
     AND op.position = (SELECT MIN(p.position) FROM call_participants p WHERE p.call_id = c.call_id AND {_OUTSIDE})
LEFT JOIN contacts ct ON ct.contact_id = {_pick_contact("op.number")}"""  # noqa: S608

_NAME_COLUMNS = (f"{_USER_NAME} AS user_name, u.email AS user_email, {_USER_KIND} AS user_kind,\n"
                 "       pn.name AS phone_number_name, pn.number AS phone_number, op.number AS other_party_number,\n"
                 "       ct.contact_id, ct.name AS contact_name, ct.company AS contact_company")

# One row per party of a call (group calls have several), named.
_CALL_PARTY_OVERVIEW = f"""\
CREATE VIEW call_party_overview AS
SELECT p.call_id, p.position, p.number, p.is_e164, p.actor_id, p.is_own_number,
       CASE WHEN SUBSTR(p.actor_id, 1, 3) = 'SYU' THEN 'agent'
            WHEN p.actor_id IS NOT NULL THEN 'user'
            WHEN p.is_own_number THEN 'own number'
            WHEN ct.contact_id IS NOT NULL THEN 'contact'
            ELSE 'unknown' END AS party_kind,
       u.user_id, CASE WHEN SUBSTR(p.actor_id, 1, 3) = 'SYU' THEN 'AI agent' ELSE COALESCE(u.name, u.email) END AS user_name,
       u.email AS user_email,
       ct.contact_id, ct.name AS contact_name, ct.company AS contact_company,
       CASE WHEN ct.contact_id IS NOT NULL THEN {_contacts_with("p.number")} END AS contacts_with_number,
       c.created_at AS call_created_at, {{day}} AS call_date, c.direction, c.phone_number_id,
       pn.name AS phone_number_name
FROM call_participants p
JOIN calls c ON c.call_id = p.call_id
LEFT JOIN users u ON u.user_id = p.actor_id
LEFT JOIN phone_numbers pn ON pn.phone_number_id = c.phone_number_id
LEFT JOIN contacts ct ON p.actor_id IS NULL AND ct.contact_id = {_pick_contact("p.number")}"""  # noqa: S608

# The measures of both daily views, over calls c and call_summaries s.
_DAILY_MEASURES = """\
COUNT(*) AS calls,
       SUM(CASE WHEN c.direction = 'incoming' THEN 1 ELSE 0 END) AS calls_in,
       SUM(CASE WHEN c.direction = 'outgoing' THEN 1 ELSE 0 END) AS calls_out,
       SUM(CASE WHEN c.answered_at IS NOT NULL THEN 1 ELSE 0 END) AS answered,
       SUM(CASE WHEN c.direction = 'incoming' AND c.answered_at IS NULL THEN 1 ELSE 0 END) AS missed,
       CASE WHEN SUM(CASE WHEN c.direction = 'incoming' THEN 1 ELSE 0 END) > 0
            THEN ROUND(100.0 * SUM(CASE WHEN c.direction = 'incoming' AND c.answered_at IS NOT NULL THEN 1 ELSE 0 END)
                       / SUM(CASE WHEN c.direction = 'incoming' THEN 1 ELSE 0 END), 1) END AS answer_rate,
       SUM(CASE WHEN c.answered_at IS NOT NULL THEN COALESCE(c.duration_seconds, 0) ELSE 0 END) AS talk_seconds,
       CASE WHEN SUM(CASE WHEN c.answered_at IS NOT NULL THEN 1 ELSE 0 END) > 0
            THEN ROUND(1.0 * SUM(CASE WHEN c.answered_at IS NOT NULL THEN COALESCE(c.duration_seconds, 0) ELSE 0 END)
                       / SUM(CASE WHEN c.answered_at IS NOT NULL THEN 1 ELSE 0 END), 1) END AS avg_duration_seconds,
       SUM(CASE WHEN s.status = 'completed' THEN 1 ELSE 0 END) AS summaries_completed,
       SUM(CASE WHEN s.next_step_count > 0 THEN 1 ELSE 0 END) AS calls_with_next_steps,
       SUM(CASE WHEN c.ai_handled = 'ai-agent' THEN 1 ELSE 0 END) AS ai_handled_calls"""

_DAILY_USER_STATS = f"""\
CREATE VIEW daily_user_stats AS
SELECT {{day}} AS call_date, COALESCE(c.user_id, c.actor_id) AS user_id,
       MAX({_USER_NAME}) AS user_name, MAX(u.email) AS user_email, MAX({_USER_KIND}) AS user_kind,
       {_DAILY_MEASURES}
FROM calls c
LEFT JOIN users u ON u.user_id = COALESCE(c.user_id, c.actor_id)
LEFT JOIN call_summaries s ON s.call_id = c.call_id
GROUP BY {{day}}, COALESCE(c.user_id, c.actor_id)"""  # noqa: S608

_DAILY_LINE_STATS = f"""\
CREATE VIEW daily_line_stats AS
SELECT {{day}} AS call_date, c.phone_number_id,
       MAX(pn.name) AS phone_number_name, MAX(pn.number) AS phone_number,
       {_DAILY_MEASURES}
FROM calls c
LEFT JOIN phone_numbers pn ON pn.phone_number_id = c.phone_number_id
LEFT JOIN call_summaries s ON s.call_id = c.call_id
GROUP BY {{day}}, c.phone_number_id"""  # noqa: S608

_NEW_VIEWS = ("daily_line_stats", "daily_user_stats", "call_party_overview")


def _call_overview_0012(overview_0007: str) -> str:
    """0007's call_overview with the names appended (the existing columns keep their place)."""
    select, from_ = overview_0007.split("\nFROM calls c\n")
    return f"{select},\n       {_NAME_COLUMNS}\nFROM calls c\n{from_}\n{_NAME_JOINS}"


def _create_call_overview(text: str) -> None:
    rev0004 = _revision("0004_calls.py")
    dialect = op.get_context().dialect.name
    op.execute(text.format(lag=rev0004._seconds(dialect, "c.completed_at", "s.first_synced_at"),
                           **rev0004._parts(dialect)))


def upgrade() -> None:
    op.create_table('contacts',
    sa.Column('contact_id', sa.String(length=255), nullable=False, comment="The contact's id."),
    sa.Column('name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment='first_name and last_name joined by a space; NULL when the API sent neither.'),
    sa.Column('first_name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment='defaultFields.firstName, after text cleaning.'),
    sa.Column('last_name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment='defaultFields.lastName, after text cleaning.'),
    sa.Column('company', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment='defaultFields.company, after text cleaning.'),
    sa.Column('role', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment='defaultFields.role, after text cleaning.'),
    sa.Column('external_id', sa.String(length=255), nullable=True, comment="externalId (a CRM's id)."),
    sa.Column('source', sa.String(length=255), nullable=True, comment='Where the contact came from (public-api, a CRM); NULL for app contacts.'),
    sa.Column('source_url', sa.Text(), nullable=True, comment='sourceUrl as sent.'),
    sa.Column('created_by_user_id', sa.String(length=255), nullable=True, comment='The user (US...) who created the contact.'),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC createdAt of the contact.'),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC updatedAt of the contact; the newest wins when a number is on several contacts.'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment="SHA-256 (hex) of the row's content and its child rows; unchanged: only last_seen_at moves."),
    sa.Column('raw_json', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False, comment='The object exactly as the API listed it (JSON text), keys not modelled too.'),
    sa.Column('first_seen_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time a refresh (or webhook) first stored the row.'),
    sa.Column('last_seen_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time a listing (or webhook) last returned the row.'),
    sa.Column('gone_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC time a complete listing first no longer returned it (or it was deleted); NULL while present. The row is kept, so history keeps its name.'),
    sa.Column('gone_reason', sa.String(length=16), nullable=True, comment='unlisted (a complete listing no longer returned it) or deleted (contact.deleted); NULL while present.'),
    sa.CheckConstraint("gone_reason IN ('unlisted', 'deleted')", name=op.f('ck_contacts_gone_reason')),
    sa.PrimaryKeyConstraint('contact_id', name=op.f('pk_contacts')),
    comment='Contacts (people outside the workspace): names and companies of the other parties.'
    )
    op.create_table('dimension_refreshes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False, comment='Refresh number, increasing.'),
    sa.Column('resource', sa.String(length=16), nullable=False, comment='users, lines or contacts.'),
    sa.Column('started_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time the refresh started.'),
    sa.Column('finished_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC time the refresh ended; NULL while running or if it crashed.'),
    sa.Column('updated_since', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='Incremental refresh: only rows updated since this UTC time were asked; NULL: all.'),
    sa.Column('requests', sa.Integer(), server_default='0', nullable=False, comment='API requests the listing cost.'),
    sa.Column('rows_seen', sa.Integer(), server_default='0', nullable=False, comment='Rows the listing returned.'),
    sa.Column('rows_new', sa.Integer(), server_default='0', nullable=False, comment='Rows stored for the first time.'),
    sa.Column('rows_changed', sa.Integer(), server_default='0', nullable=False, comment='Rows stored before whose content changed.'),
    sa.Column('rows_gone', sa.Integer(), server_default='0', nullable=False, comment='Rows a complete listing no longer returned (marked gone now).'),
    sa.Column('complete', sa.Boolean(), nullable=False, comment='Whether the listing was the whole set (then rows it did not return were marked gone).'),
    sa.Column('problem', sa.Text(), nullable=True, comment='Why the listing is incomplete or unavailable (at most 2000 characters); NULL when fine.'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dimension_refreshes')),
    comment='History of users / lines / contacts refreshes: requests spent, rows seen, new, changed, gone.'
    )
    with op.batch_alter_table('dimension_refreshes', schema=None) as batch_op:
        batch_op.create_index('ix_dimension_refreshes_resource', ['resource', 'started_at'], unique=False)

    op.create_table('phone_numbers',
    sa.Column('phone_number_id', sa.String(length=255), nullable=False, comment="The line's id (PN...), as in calls.phone_number_id."),
    sa.Column('name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment="The line's label, e.g. Sales, after text cleaning."),
    sa.Column('number', sa.String(length=255), nullable=True, comment="The line's number in E.164 (v1 number, dated phoneNumber)."),
    sa.Column('formatted_number', sa.String(length=255), nullable=True, comment='formattedNumber as sent, e.g. (555) 000-0001.'),
    sa.Column('symbol', sa.String(length=255), nullable=True, comment="The line's symbol (an emoji)."),
    sa.Column('group_id', sa.String(length=255), nullable=True, comment='groupId, when the API sends one.'),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC createdAt of the line.'),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC updatedAt of the line.'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment="SHA-256 (hex) of the row's content and its child rows; unchanged: only last_seen_at moves."),
    sa.Column('raw_json', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False, comment='The object exactly as the API listed it (JSON text), keys not modelled too.'),
    sa.Column('first_seen_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time a refresh (or webhook) first stored the row.'),
    sa.Column('last_seen_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time a listing (or webhook) last returned the row.'),
    sa.Column('gone_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC time a complete listing first no longer returned it (or it was deleted); NULL while present. The row is kept, so history keeps its name.'),
    sa.PrimaryKeyConstraint('phone_number_id', name=op.f('pk_phone_numbers')),
    comment="The workspace's own phone numbers (lines, PN...): name and number."
    )
    op.create_table('users',
    sa.Column('user_id', sa.String(length=255), nullable=False, comment="The user's id (US...)."),
    sa.Column('name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment='first_name and last_name joined by a space; NULL when the API sent neither.'),
    sa.Column('email', sa.String(length=255), nullable=True, comment="The user's email, as sent."),
    sa.Column('first_name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment='firstName, after text cleaning.'),
    sa.Column('last_name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment='lastName, after text cleaning.'),
    sa.Column('role', sa.String(length=255), nullable=True, comment='owner, admin or member (others kept as sent).'),
    sa.Column('group_id', sa.String(length=255), nullable=True, comment='groupId, when the API sends one.'),
    sa.Column('picture_url', sa.Text(), nullable=True, comment='pictureUrl as sent; NULL when none.'),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC createdAt of the user.'),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC updatedAt of the user.'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment="SHA-256 (hex) of the row's content and its child rows; unchanged: only last_seen_at moves."),
    sa.Column('raw_json', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False, comment='The object exactly as the API listed it (JSON text), keys not modelled too.'),
    sa.Column('first_seen_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time a refresh (or webhook) first stored the row.'),
    sa.Column('last_seen_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time a listing (or webhook) last returned the row.'),
    sa.Column('gone_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC time a complete listing first no longer returned it (or it was deleted); NULL while present. The row is kept, so history keeps its name.'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_users')),
    comment='Workspace users (US...): names and emails beside every call.'
    )
    op.create_table('contact_custom_fields',
    sa.Column('contact_id', sa.String(length=255), nullable=False, comment='The contact (contacts.contact_id).'),
    sa.Column('field_position', sa.Integer(), autoincrement=False, nullable=False, comment='0-based position in the customFields array.'),
    sa.Column('value_position', sa.Integer(), autoincrement=False, nullable=False, comment="0-based position of the value in a multi-select's list; 0 for every other field."),
    sa.Column('field_key', sa.String(length=255), nullable=True, comment="The field's key, as sent."),
    sa.Column('field_id', sa.String(length=255), nullable=True, comment="The field's id, as sent."),
    sa.Column('name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment="The field's name, e.g. Plan, after text cleaning."),
    sa.Column('field_type', sa.String(length=255), nullable=True, comment="The API's type: address, boolean, date, multi-select, number, string or url (others as sent)."),
    sa.Column('value_type', sa.String(length=8), nullable=False, comment='string, number, boolean, json (an object or list as JSON text) or null (no value).'),
    sa.Column('value_text', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True, comment='The value when value_type is string (dates and urls too) or json, else NULL.'),
    sa.Column('value_number', sa.Double(), nullable=True, comment="The value when value_type = 'number', else NULL."),
    sa.Column('value_boolean', sa.Boolean(), nullable=True, comment="The value when value_type = 'boolean', else NULL."),
    sa.CheckConstraint("value_type IN ('string', 'number', 'boolean', 'json', 'null')", name=op.f('ck_contact_custom_fields_value_type')),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.contact_id'], name=op.f('fk_contact_custom_fields_contact_id_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('contact_id', 'field_position', 'value_position', name=op.f('pk_contact_custom_fields')),
    comment='Custom fields of a contact: one row per value (multi-select: one per selected value).'
    )
    op.create_table('contact_emails',
    sa.Column('contact_id', sa.String(length=255), nullable=False, comment='The contact (contacts.contact_id).'),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False, comment='0-based position in defaultFields.emails.'),
    sa.Column('label', sa.String(length=255), nullable=True, comment="The email's name, e.g. work."),
    sa.Column('value', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False, comment='The email as sent, after text cleaning.'),
    sa.Column('value_id', sa.String(length=255), nullable=True, comment="The value's id, as sent."),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.contact_id'], name=op.f('fk_contact_emails_contact_id_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('contact_id', 'position', name=op.f('pk_contact_emails')),
    comment='Emails of a contact, position 0 first.'
    )
    op.create_table('contact_phone_numbers',
    sa.Column('contact_id', sa.String(length=255), nullable=False, comment='The contact (contacts.contact_id).'),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False, comment='0-based position in defaultFields.phoneNumbers.'),
    sa.Column('label', sa.String(length=255), nullable=True, comment="The number's name, e.g. mobile."),
    sa.Column('value', sa.String(length=255), nullable=False, comment='The number as sent, after text cleaning.'),
    sa.Column('number_e164', sa.String(length=255), nullable=True, comment='value as E.164 (docs/schema.md: Matching); NULL when it cannot be read as one.'),
    sa.Column('value_id', sa.String(length=255), nullable=True, comment="The value's id, as sent."),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.contact_id'], name=op.f('fk_contact_phone_numbers_contact_id_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('contact_id', 'position', name=op.f('pk_contact_phone_numbers')),
    comment='Phone numbers of a contact, position 0 first; number_e164 matches call_participants.number.'
    )
    with op.batch_alter_table('contact_phone_numbers', schema=None) as batch_op:
        batch_op.create_index('ix_contact_phone_numbers_number_e164', ['number_e164'], unique=False)

    op.create_table('phone_number_users',
    sa.Column('phone_number_id', sa.String(length=255), nullable=False, comment='The line (phone_numbers.phone_number_id).'),
    sa.Column('user_id', sa.String(length=255), nullable=False, comment='The member (users.user_id; no foreign key).'),
    sa.Column('position', sa.Integer(), nullable=False, comment="0-based position in the line's users array."),
    sa.Column('email', sa.String(length=255), nullable=True, comment="The member's email as the line lists it."),
    sa.Column('role', sa.String(length=255), nullable=True, comment="The member's role as the line lists it."),
    sa.ForeignKeyConstraint(['phone_number_id'], ['phone_numbers.phone_number_id'], name=op.f('fk_phone_number_users_phone_number_id_phone_numbers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('phone_number_id', 'user_id', name=op.f('pk_phone_number_users')),
    comment='Members of each line (users on phone_numbers), as the last listing named them.'
    )
    with op.batch_alter_table('phone_number_users', schema=None) as batch_op:
        batch_op.create_index('ix_phone_number_users_user_id', ['user_id'], unique=False)

    overview_0007 = _revision("0007_dated_api.py")._CALL_OVERVIEW
    op.execute("DROP VIEW call_overview")
    op.execute(_CONTACT_NUMBER_MATCHES)
    _create_call_overview(_call_overview_0012(overview_0007))
    day = _revision("0004_calls.py")._parts(op.get_context().dialect.name)["day"]
    op.execute(_CALL_PARTY_OVERVIEW.format(day=day))
    op.execute(_DAILY_USER_STATS.format(day=day))
    op.execute(_DAILY_LINE_STATS.format(day=day))


def downgrade() -> None:
    for view in _NEW_VIEWS:
        op.execute(f"DROP VIEW {view}")
    op.execute("DROP VIEW call_overview")
    op.execute("DROP VIEW contact_number_matches")
    _create_call_overview(_revision("0007_dated_api.py")._CALL_OVERVIEW)
    with op.batch_alter_table('phone_number_users', schema=None) as batch_op:
        batch_op.drop_index('ix_phone_number_users_user_id')

    op.drop_table('phone_number_users')
    with op.batch_alter_table('contact_phone_numbers', schema=None) as batch_op:
        batch_op.drop_index('ix_contact_phone_numbers_number_e164')

    op.drop_table('contact_phone_numbers')
    op.drop_table('contact_emails')
    op.drop_table('contact_custom_fields')
    op.drop_table('users')
    op.drop_table('phone_numbers')
    with op.batch_alter_table('dimension_refreshes', schema=None) as batch_op:
        batch_op.drop_index('ix_dimension_refreshes_resource')

    op.drop_table('dimension_refreshes')
    op.drop_table('contacts')
