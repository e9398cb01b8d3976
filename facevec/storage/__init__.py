"""The storage layer: every SQL statement on facevec's tables, on every database.

- ``urls``: database URLs parsed (never a secret in a message);
- ``dialects``: what differs between SQLite, PostgreSQL and MariaDB/MySQL;
- ``database``: connections (SQLite and servers), ``Database`` and its
  ``transaction()``;
- ``schema``: the tables, and the collection record that pins one model;
- ``faces``: face_meta and face_embeddings; ``ledger``: ingest_ledger;
- ``search_sql``: the extension and relational search queries;
- ``knn_index``: the statements of the facevec_knn index.

Use cases (ingest, search, recognize, knn, transfer, info) call these and write
no SQL of their own.
"""
