"""Synthetic benchmark data: random text and jsonb that compress like real data.

An uncompressed dump of it (`pg_dump -Fc -Z0`) shrinks ~3.3:1 with zstd -3, to about a
quarter of the database size (1 GiB: ~3.1 M rows, ~240 MB compressed).

All rows are generated server-side (INSERT ... SELECT over generate_series), in batches
spread over a few connections. Text is drawn word by word from a Zipf-weighted vocabulary
(frequent words are short, as in natural language) with numbers, hex ids and punctuation
mixed in; pgbench's fill, by contrast, is mostly blank padding and compresses far too well.
Every batch reseeds the server's `random()`, so a given seed and size give the same data.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

Query = sql.SQL | sql.Composed

BATCH_ROWS = 100_000
CALIBRATION_ROWS = 5_000
TABLE_SHARES = {"events": 0.65, "documents": 0.20, "users": 0.15}

_COMMON_WORDS = (
    "the of and to a in is it you that he was for on are as with his they at be this have "
    "from or one had by but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part"
)
_SYLLABLES = (
    "ka lo mi ren tor sa vel qu in ar est on pre dis ly ment tion ex ab cor del fin gra hal "
    "ist jun kem lum mor nap ost pul ris sun tam ur vis wen yar zo ber cal dan er ful gen ing "
    "ic ter ble per com pro con ra re ta na si ve lan der mar ous ant ive"
)
_VOCABULARY_WORDS = 6000
_VOCABULARY_PHRASES = 1500


def vocabulary() -> list[str]:
    """Entries in Zipf rank order: common words and short phrases first, then pseudo-words.

    The phrases stand in for natural language's recurring word sequences ("of the"); without
    them independent words compress only ~2.5:1, below real text.
    """
    rng = random.Random(0x5117)  # noqa: S311 - the same vocabulary for every seed
    common = _COMMON_WORDS.split()
    syllables = _SYLLABLES.split()
    words = list(common)
    seen = set(words)
    while len(words) < _VOCABULARY_WORDS:
        word = "".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    # Short words are the frequent ones, with some noise so length is not exact.
    words[len(common) :] = sorted(words[len(common) :], key=lambda w: len(w) + rng.random() * 4)
    ln_top = math.log(1000)
    phrases: list[str] = []
    while len(phrases) < _VOCABULARY_PHRASES:
        size = rng.randint(2, 4)
        phrase = " ".join(words[int(math.exp(rng.random() * ln_top)) - 1] for _ in range(size))
        if phrase not in seen:
            seen.add(phrase)
            phrases.append(phrase)
    ranked = words[:10]
    for i, word in enumerate(words[10:]):
        if i < len(phrases):
            ranked.append(phrases[i])
        ranked.append(word)
    return ranked


_WORD = "substring(%(vocab)s::bytea FROM (%(offs)s::int[])[{k}] FOR (%(lens)s::int[])[{k}])"
_ZIPF_RANK = "floor(exp(random() * %(ln_v)s))::int"


def _word(rank: str) -> Query:
    """The vocabulary entry of Zipf rank `rank` (a column), as text.

    Entries are sliced out of one bytea by offset and length: int arrays index in O(1),
    text arrays in O(n).
    """
    return sql.SQL("convert_from({}, 'UTF8')").format(sql.SQL(_WORD.format(k=rank)))


def _words(count: str, *, plain: bool = False) -> Query:
    """A correlated sub-select giving `count` random words separated by spaces.

    Unless `plain`, some words get punctuation and some are replaced by numbers or hex.
    `count` must reference the outer row, or PostgreSQL evaluates the sub-select only once.
    """
    word = sql.SQL(_WORD.format(k="k"))
    token: Query = word
    if not plain:
        token = sql.SQL(
            "CASE WHEN r < 0.025 THEN convert_to((random() * 99999)::int::text, 'UTF8')"
            " WHEN r < 0.035 THEN convert_to(to_hex((random() * 4294967295)::bigint), 'UTF8')"
            " WHEN r > 0.93 THEN {word} || '\\x2e'::bytea"
            " WHEN r > 0.89 THEN {word} || '\\x2c'::bytea"
            " ELSE {word} END"
        ).format(word=word)
    return sql.SQL(
        "(SELECT convert_from(string_agg({token}, '\\x20'::bytea), 'UTF8')"
        " FROM (SELECT random() AS r, {rank} AS k FROM generate_series(1, {count})) w)"
    ).format(token=token, rank=sql.SQL(_ZIPF_RANK), count=sql.SQL(count))


def _rows(n1: tuple[int, int], n2: tuple[int, int], n3: tuple[int, int]) -> Query:
    """Row source `s`: ids g from %(lo)s to %(hi)s, random ints n1-n3 in the given ranges
    and Zipf ranks k1, k2, each drawn once per row (the expressions use them repeatedly).
    """
    ints = [
        sql.SQL("{} + floor(random() * {})::int AS {}").format(
            sql.Literal(low), sql.Literal(high - low + 1), sql.Identifier(name)
        )
        for name, (low, high) in (("n1", n1), ("n2", n2), ("n3", n3))
    ]
    return sql.SQL(
        "FROM (SELECT g, {ints}, {rank} AS k1, {rank} AS k2"
        " FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g) s"
    ).format(ints=sql.SQL(", ").join(ints), rank=sql.SQL(_ZIPF_RANK))


@dataclass(frozen=True)
class _Table:
    name: str
    create: Query
    insert: Query
    indexes: tuple[Query, ...]


def _tables() -> list[_Table]:
    events = _Table(
        "events",
        sql.SQL(
            "CREATE TABLE events (id bigserial, created_at timestamptz NOT NULL,"
            " user_id bigint NOT NULL, kind text NOT NULL, payload jsonb NOT NULL)"
        ),
        sql.SQL(
            "INSERT INTO events (id, created_at, user_id, kind, payload)"
            " SELECT g, timestamptz '2023-01-01 00:00:00+00' + g * interval '7 seconds'"
            "   + random() * interval '5 seconds',"
            " n1, (ARRAY['page_view','page_view','page_view','click','click','search',"
            "   'signup','login','logout','purchase','error'])[n3 %% 11 + 1],"
            " jsonb_build_object("
            "   'session', lpad(to_hex((random() * 281474976710655)::bigint), 12, '0'),"
            "   'path', (ARRAY['/api/v1/','/app/','/docs/','/account/','/search/'])[n2 %% 5 + 1]"
            "     || replace({word}, ' ', '-') || '/' || n2 %% 5000,"
            "   'status', (ARRAY[200,200,200,200,200,201,204,301,304,400,404,500])[n3 %% 12 + 1],"
            "   'ms', (random() * random() * 2000)::int,"
            "   'message', {message})"
            " {rows}"
        ).format(
            word=_word("k1"),
            message=_words("1 + s.n3 %% 6"),
            rows=_rows((1, 300_000), (0, 1_000_000), (0, 1_000_000)),
        ),
        (sql.SQL("CREATE INDEX events_created_at_idx ON events (created_at)"),),
    )
    documents = _Table(
        "documents",
        sql.SQL(
            "CREATE TABLE documents (id bigserial, user_id bigint NOT NULL, title text NOT NULL,"
            " body text NOT NULL, tags text[] NOT NULL, updated_at timestamptz NOT NULL);"
            # Out of line but uncompressed, so relation size stays close to the dump's size.
            " ALTER TABLE documents ALTER COLUMN body SET STORAGE EXTERNAL"
        ),
        sql.SQL(
            "INSERT INTO documents (id, user_id, title, body, tags, updated_at)"
            " SELECT g, n1, initcap({title}), {body}, string_to_array({tags}, ' '),"
            " timestamptz '2023-01-01 00:00:00+00' + g * interval '53 seconds'"
            "   + random() * interval '30 days'"
            " {rows}"
        ).format(
            title=_words("3 + s.n2 %% 5", plain=True),
            body=_words("s.n3"),
            tags=_words("1 + s.n2 %% 4", plain=True),
            rows=_rows((1, 300_000), (0, 1_000_000), (40, 200)),
        ),
        (sql.SQL("CREATE INDEX documents_user_id_idx ON documents (user_id)"),),
    )
    users = _Table(
        "users",
        sql.SQL(
            "CREATE TABLE users (id bigserial, email text NOT NULL, name text NOT NULL,"
            " created_at timestamptz NOT NULL, bio text NOT NULL, settings jsonb NOT NULL)"
        ),
        sql.SQL(
            "INSERT INTO users (id, email, name, created_at, bio, settings)"
            " SELECT g, replace({w2}, ' ', '.') || '.' || g || '@'"
            "   || (ARRAY['example.com','example.org','mail.example','corp.example'])[n1 %% 4 + 1],"
            " initcap({w1} || ' ' || {w2}),"
            " timestamptz '2020-01-01 00:00:00+00' + g * interval '97 seconds',"
            " {bio},"
            " jsonb_build_object('theme', (ARRAY['light','dark','system'])[n1 %% 3 + 1],"
            "   'lang', (ARRAY['en','de','fr','es','pt','ja'])[n2 %% 6 + 1],"
            "   'notifications', n1 %% 5 <> 0, 'api_key', md5(random()::text))"
            " {rows}"
        ).format(
            w1=_word("k1"),
            w2=_word("k2"),
            bio=_words("s.n3"),
            rows=_rows((0, 1_000_000), (0, 1_000_000), (3, 30)),
        ),
        (sql.SQL("CREATE UNIQUE INDEX users_email_key ON users (email)"),),
    )
    return [events, documents, users]


def _vocabulary_params() -> dict[str, object]:
    words = vocabulary()
    offs, lens, pos = [], [], 1
    for w in words:
        offs.append(pos)
        lens.append(len(w))
        pos += len(w) + 1
    return {
        "vocab": " ".join(words).encode(),
        "offs": offs,
        "lens": lens,
        "ln_v": math.log(len(words) + 1),
    }


def _batch_seed(seed: int, table: str, lo: int) -> float:
    return random.Random(f"{seed}/{table}/{lo}").uniform(-1.0, 1.0)  # noqa: S311


def _ranges(lo: int, hi: int, step: int) -> Iterator[tuple[int, int]]:
    while lo <= hi:
        yield lo, min(hi, lo + step - 1)
        lo += step


def _run_parallel(
    dsn: str,
    jobs: list[tuple[Query, dict[str, object] | None, float | None]],
    workers: int,
) -> None:
    """Run (statement, params, seed) jobs on `workers` connections; re-raise the first error."""
    pending = list(reversed(jobs))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SET maintenance_work_mem = '256MB'")
                while True:
                    with lock:
                        if errors or not pending:
                            return
                        stmt, params, seed = pending.pop()
                    if seed is not None:
                        conn.execute("SELECT setseed(%s)", (seed,))
                    # Never prepared: a generic plan would re-cast the vocabulary arrays for
                    # every word instead of folding the casts once (5x slower).
                    conn.execute(stmt, params, prepare=False)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _table_names(tables: list[_Table]) -> Query:
    return sql.SQL(", ").join(sql.Identifier(t.name) for t in tables)


def _bytes_per_row(
    conn: psycopg.Connection[tuple[Any, ...]],
    tables: list[_Table],
    vocab: dict[str, object],
    seed: int,
) -> dict[str, float]:
    """Bytes per row (heap, TOAST and indexes) of each table, from a rolled-back sample."""
    per_row: dict[str, float] = {}
    with conn.transaction(force_rollback=True):
        for t in tables:
            conn.execute(t.create)
            conn.execute("SELECT setseed(%s)", (_batch_seed(seed, t.name, 0),))
            conn.execute(t.insert, {**vocab, "lo": 1, "hi": CALIBRATION_ROWS}, prepare=False)
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(sql.Identifier(t.name))
            )
            for index in t.indexes:
                conn.execute(index)
            row = conn.execute("SELECT pg_total_relation_size(%s)", (t.name,)).fetchone()
            assert row is not None
            per_row[t.name] = int(row[0]) / CALIBRATION_ROWS
    return per_row


def database_bytes(dsn: str) -> int:
    """Total size of the bench tables, indexes and TOAST included."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c"
            " WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace"
            " AND c.relname = ANY(%s)",
            (list(TABLE_SHARES),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def fill_database(
    dsn: str, target_bytes: int, *, seed: int = 1, workers: int = 2
) -> dict[str, int]:
    """(Re)create the bench tables in `dsn`'s database with ~target_bytes in total.

    The size counts indexes and TOAST (pg_total_relation_size). Returns rows per table.
    1 GiB takes ~45 s with two workers on two cores.
    """
    tables = _tables()
    vocab = _vocabulary_params()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(_table_names(tables)))
        per_row = _bytes_per_row(conn, tables, vocab, seed)
        for t in tables:
            conn.execute(t.create)
    rows = {
        t.name: max(1, round(TABLE_SHARES[t.name] * target_bytes / per_row[t.name])) for t in tables
    }

    inserts = [(t, lo, hi) for t in tables for lo, hi in _ranges(1, rows[t.name], BATCH_ROWS)]
    # Largest batches first, so the workers finish together.
    inserts.sort(key=lambda job: (job[2] - job[1] + 1) * per_row[job[0].name], reverse=True)
    _run_parallel(
        dsn,
        [
            (t.insert, {**vocab, "lo": lo, "hi": hi}, _batch_seed(seed, t.name, lo))
            for t, lo, hi in inserts
        ],
        workers,
    )
    ddl: list[Query] = [
        sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(sql.Identifier(t.name))
        for t in tables
    ]
    ddl += [index for t in tables for index in t.indexes]
    _run_parallel(dsn, [(stmt, None, None) for stmt in ddl], workers)
    finish: list[Query] = []
    for t in tables:
        finish.append(
            sql.SQL("SELECT setval(pg_get_serial_sequence({name}, 'id'), {rows})").format(
                name=sql.Literal(t.name), rows=sql.Literal(rows[t.name])
            )
        )
        # Hint bits set now, so the first benchmark's reads do not rewrite every page.
        finish.append(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(t.name)))
    _run_parallel(dsn, [(stmt, None, None) for stmt in finish], workers)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.datagen", description=__doc__.split("\n")[0]
    )
    parser.add_argument("dsn", help="libpq URL of the database to fill")
    parser.add_argument("--mb", type=float, default=1024, help="target size in MiB (default 1024)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="parallel connections")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows = fill_database(args.dsn, int(args.mb * 1024 * 1024), seed=args.seed, workers=args.workers)
    seconds = time.monotonic() - started
    record: dict[str, object] = {
        **rows,
        "bytes": database_bytes(args.dsn),
        "seconds": round(seconds, 2),
    }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
