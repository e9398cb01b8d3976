"""What differs between SQL databases: placeholders, column types, a few clauses.

Every statement of the storage layer is written once, through a Dialect; another
database is one more subclass here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Dialect:
    """Base dialect: standard SQL with qmark placeholders."""

    name = "sql"
    placeholder = "?"
    types: dict[str, str] = {
        "id": "INTEGER PRIMARY KEY",  # row id assigned by the database on insert
        "int": "INTEGER",
        "real": "DOUBLE PRECISION",
        "text": "TEXT",
        "key_text": "VARCHAR(1024)",  # text that is part of a key or index
        "blob": "BLOB",
    }
    # Clause after CREATE TABLE face_embeddings (...), e.g. WITHOUT ROWID.
    embeddings_table_suffix = ""
    has_extension = False
    # Appended to an INSERT whose new id is wanted (PostgreSQL has no lastrowid).
    returning_id = ""

    def inserted_id(self, cursor: Any) -> int:
        """The id the database gave the row an INSERT (+ returning_id) just added."""
        return int(cursor.lastrowid)

    # SQL with one placeholder, a table name: a row if that table exists.
    table_exists_sql = (
        "SELECT 1 FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_name = {p}"
    )

    # Likewise for an index name; the catalogs differ, so each dialect has its own.
    index_exists_sql = ""

    # Two placeholders, a table and a column name: a row if that column exists.
    column_exists_sql = (
        "SELECT 1 FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = {p} AND column_name = {p}"
    )

    # Likewise for a view name.
    view_exists_sql = (
        "SELECT 1 FROM information_schema.views"
        " WHERE table_schema = current_schema() AND table_name = {p}"
    )

    def insert_or_ignore(self, table: str, columns: str) -> str:
        """INSERT of one row that does nothing if it would break a unique key."""
        n = columns.count(",") + 1
        return f"INSERT INTO {table} ({columns}) VALUES ({self.params(n)}) ON CONFLICT DO NOTHING"

    def params(self, n: int) -> str:
        """`n` comma-separated placeholders."""
        return ", ".join([self.placeholder] * n)

    def sql(self, text: str) -> str:
        """SQL written with {p} for each placeholder, in this dialect."""
        return text.replace("{p}", self.placeholder)

    def limit(self, k: int | None) -> tuple[str, list[int]]:
        return ("", []) if k is None else (f" LIMIT {self.placeholder}", [int(k)])

    def target_table(self, conn: Any, values: Sequence[float]) -> tuple[str, str, list[float]]:
        """Make the query vector a table target(dimension, value) for the join.

        Returns (WITH clause, join clause, parameters). Here: a derived table of
        bound parameters; a dialect may instead fill a keyed temporary table.
        """
        rows = self.target_rows(len(values))
        params: list[float] = []
        for dimension, value in enumerate(values):
            params.extend((dimension, float(value)))
        return (
            f"WITH target(dimension, value) AS ({rows}) ",
            "JOIN target t ON t.dimension = e.dimension",
            params,
        )

    def target_rows(self, n: int) -> str:
        """n rows of two placeholders (dimension, value), as a query."""
        pair = f"({self.placeholder}, {self.placeholder})"
        return "VALUES " + ", ".join([pair] * n)


class SQLiteDialect(Dialect):
    name = "sqlite"
    table_exists_sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = {p}"
    index_exists_sql = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = {p}"
    view_exists_sql = "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = {p}"
    column_exists_sql = "SELECT 1 FROM pragma_table_info({p}) WHERE name = {p}"
    placeholder = "?"
    # AUTOINCREMENT: an id is never handed out twice, even after the newest row is
    # deleted (storage/id_sequences.py).
    types = dict(
        Dialect.types, id="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL", key_text="TEXT"
    )
    # The table is its own covering index, clustered on (face_id, dimension): a scan
    # reads each face's values together, so GROUP BY face_id streams.
    embeddings_table_suffix = " WITHOUT ROWID"
    has_extension = True

    def target_table(self, conn: Any, values: Sequence[float]) -> tuple[str, str, list[float]]:
        # A temporary table keyed on dimension (its rowid), joined with CROSS JOIN so
        # SQLite scans face_embeddings once in key order, looks each value's target up
        # by rowid and streams GROUP BY face_id: linear in the rows, no per-query index
        # (with a VALUES table SQLite builds an automatic index on every query).
        # Writing to temp takes no lock on the database file.
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS facevec_target"
            " (dimension INTEGER PRIMARY KEY, value REAL NOT NULL)"
        )
        conn.execute("DELETE FROM temp.facevec_target")
        conn.executemany(
            "INSERT INTO temp.facevec_target (dimension, value) VALUES (?, ?)",
            [(dimension, float(value)) for dimension, value in enumerate(values)],
        )
        return "", "CROSS JOIN temp.facevec_target t ON t.dimension = e.dimension", []


SQLITE = SQLiteDialect()


class PostgreSQLDialect(Dialect):
    """PostgreSQL through psycopg 3 (format-style %s placeholders)."""

    index_exists_sql = (
        "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = {p}"
    )
    name = "postgresql"
    placeholder = "%s"
    # BIGINT throughout: SQLite's INTEGER is 64-bit, and file sizes pass 2**31.
    types = dict(
        Dialect.types,
        id="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        int="BIGINT",
        key_text="TEXT",
        blob="BYTEA",
    )
    returning_id = " RETURNING id"

    def inserted_id(self, cursor: Any) -> int:
        return int(cursor.fetchone()[0])

    # target_table: the base VALUES list. The planner hashes its 128 rows and joins
    # one sequential scan of face_embeddings against it; the same rows written as
    # SELECT ... UNION ALL become an Append it nests a loop over (14x slower at 20k).


class MySQLDialect(Dialect):
    """MariaDB and MySQL through PyMySQL (format-style %s placeholders)."""

    table_exists_sql = (
        "SELECT 1 FROM information_schema.tables"
        " WHERE table_schema = DATABASE() AND table_name = {p}"
    )
    index_exists_sql = (
        "SELECT 1 FROM information_schema.statistics"
        " WHERE table_schema = DATABASE() AND index_name = {p} LIMIT 1"
    )
    view_exists_sql = (
        "SELECT 1 FROM information_schema.views"
        " WHERE table_schema = DATABASE() AND table_name = {p}"
    )
    column_exists_sql = (
        "SELECT 1 FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name = {p} AND column_name = {p}"
    )

    name = "mysql"
    placeholder = "%s"
    types = dict(
        Dialect.types,
        id="BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
        int="BIGINT",
        real="DOUBLE",
        text="LONGTEXT",
        # InnoDB keys hold at most 3072 bytes: 700 utf8mb4 characters (2800 bytes)
        # plus an integer fit in one. Binary collation: paths and names are compared
        # byte for byte, as on SQLite, not case- or accent-insensitively.
        key_text="VARCHAR(700) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        blob="LONGBLOB",
    )
    embeddings_table_suffix = " ENGINE=InnoDB"

    def insert_or_ignore(self, table: str, columns: str) -> str:
        n = columns.count(",") + 1
        return f"INSERT IGNORE INTO {table} ({columns}) VALUES ({self.params(n)})"

    def target_rows(self, n: int) -> str:
        # MySQL 8 spells a row constructor VALUES ROW(...), MariaDB VALUES (...);
        # SELECT ... UNION ALL runs on both. MariaDB materialises the derived table
        # and joins it in a buffer against one scan of face_embeddings' clustered
        # key (0.9 s at 20k faces); a keyed temporary table probed per row is
        # slower here (1.5 s), unlike SQLite.
        pair = f"SELECT {self.placeholder}, {self.placeholder}"
        return " UNION ALL ".join([pair] * n)


POSTGRESQL = PostgreSQLDialect()
MYSQL = MySQLDialect()
