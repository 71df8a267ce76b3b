"""Databases and buckets for backup tests: a rich schema, and exact comparisons."""

from __future__ import annotations

import secrets
from typing import Any

import psycopg

from tests.harness.postgres import PostgresInfo

RICH_SCHEMA = """
CREATE SCHEMA app;
CREATE SCHEMA audit;
CREATE SEQUENCE app.invoice_no START 1000 INCREMENT 7;
CREATE TABLE app.users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE CHECK (position('@' in email) > 1),
    profile jsonb NOT NULL DEFAULT '{}',
    avatar bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_profile_gin ON app.users USING gin (profile);
CREATE TABLE app.invoices (
    id integer PRIMARY KEY DEFAULT nextval('app.invoice_no'),
    user_id bigint NOT NULL REFERENCES app.users(id) ON DELETE CASCADE,
    amount numeric(12, 2) NOT NULL,
    notes text
);
CREATE INDEX invoices_user ON app.invoices(user_id);
CREATE TABLE audit.events (id bigserial PRIMARY KEY, at timestamptz, body text);
CREATE VIEW app.big_spenders AS
    SELECT u.email, sum(i.amount) AS total FROM app.users u JOIN app.invoices i ON i.user_id = u.id
    GROUP BY u.email HAVING sum(i.amount) > 100;
CREATE TABLE public."Mixed Case" ("Key" text PRIMARY KEY, "value" int);
INSERT INTO app.users (email, profile, avatar)
    SELECT 'u' || g || '@example.com', jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 7)),
           decode(md5(g::text), 'hex')
    FROM generate_series(1, 500) g;
INSERT INTO app.invoices (user_id, amount, notes)
    SELECT 1 + (g % 500), (g % 997) / 3.0, repeat('line ' || g || ' ', 1 + g % 50)
    FROM generate_series(1, 2000) g;
INSERT INTO audit.events (at, body)
    SELECT now() - g * interval '1 minute', repeat(md5(g::text), 200) FROM generate_series(1, 300) g;
INSERT INTO public."Mixed Case" VALUES ('a b', 1), ('ünï', 2), ('', NULL);
"""


def create_database(pg: PostgresInfo, sql: str = RICH_SCHEMA, name: str | None = None) -> str:
    name = name or f"app_{secrets.token_hex(4)}"
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(pg.url(name)) as conn:
        conn.execute(sql)  # type: ignore[arg-type]
    return name


def snapshot(pg: PostgresInfo, database: str) -> dict[str, Any]:
    """Everything that should survive a round trip: rows per table, schema, sequences."""
    with psycopg.connect(pg.url(database)) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
            "AND table_type = 'BASE TABLE' ORDER BY 1, 2"
        ).fetchall()
        rows = {
            f"{s}.{t}": conn.execute(
                f'SELECT * FROM "{s}"."{t}" ORDER BY 1'  # noqa: S608 - names from the catalog
            ).fetchall()
            for s, t in tables
        }
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
        ).fetchall()
        indexes = conn.execute(
            "SELECT schemaname, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname NOT IN ('pg_catalog') ORDER BY 1, 2"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace::regnamespace::text NOT IN ('pg_catalog') ORDER BY 1"
        ).fetchall()
        views = conn.execute(
            "SELECT schemaname, viewname, definition FROM pg_views "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        sequences = conn.execute(
            "SELECT schemaname, sequencename, last_value, increment_by FROM pg_sequences ORDER BY 1, 2"
        ).fetchall()
    return {
        "rows": rows,
        "columns": columns,
        "indexes": indexes,
        "constraints": constraints,
        "views": views,
        "sequences": sequences,
    }
