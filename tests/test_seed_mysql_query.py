"""Regression: the seed's query on MariaDB, as a reader posted it and as the seed wrote it.

A reader of the seed (sefiks.com, "Deep Face Recognition with SQL", 2021) posted a
MySQL version of its query in the comments, over tables `rostos` /
`rosto_embeddings`, grouped by `nome_imagem` with `HAVING distance_squared < 100`,
and reported that it returned nothing. The comment's exact text could not be
retrieved for this project, so READER_* below is a faithful reconstruction: the
seed's own query with the reader's names and HAVING clause, and the typography a
blog comment gives code (en dashes for minus signs, curly quotes). Running it on
MariaDB is what the README's paragraph about it reports.
"""

from __future__ import annotations

import math
import re
import sqlite3

import numpy as np
import pytest
from backends import fresh_database

import facevec

# As published (reconstructed): the line that builds one target row, and the query.
READER_TARGET_LINE = (
    "target_statement += \u2018select %d as dimension, %s as value\u2019 % (i, str(value))"
)
READER_QUERY = """
select nome_imagem, sum(subtract_squared) as distance_squared
from (
    select nome_imagem, (source \u2013 target) * (source \u2013 target) as subtract_squared
    from (
        select rostos.nome_imagem, rosto_embeddings.value as source, target.value as target
        from rostos left join rosto_embeddings
        on rostos.id = rosto_embeddings.rosto_id
        left join (
            {target_statement}
        ) target
        on rosto_embeddings.dimension = target.dimension
    ) as source_target
) as squared
group by nome_imagem
having distance_squared < 100
order by distance_squared asc
"""

TYPOGRAPHY = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
}


def repair(text: str) -> str:
    """Undo a blog's typography: curly quotes and dashes back to ASCII."""
    for fancy, plain in TYPOGRAPHY.items():
        text = text.replace(fancy, plain)
    return text


def reader_sql(target_embedding, published: bool = False) -> str:
    line = READER_TARGET_LINE if published else repair(READER_TARGET_LINE)
    row = re.search(r"[\u2018']([^\u2019']*)[\u2019']", line).group(1)
    target_statement = " union all ".join(
        row % (i, str(float(value))) for i, value in enumerate(target_embedding)
    )
    query = READER_QUERY if published else repair(READER_QUERY)
    return query.format(target_statement=target_statement)


@pytest.fixture
def reader_tables(gallery_db, tmp_path):
    """A MariaDB database laid out as the reader's, holding the session's gallery."""
    with fresh_database("mysql", tmp_path) as url:
        from facevec.storage.database import connect_url

        conn, _, _ = connect_url(url)
        cursor = conn.cursor()
        cursor.execute(
            "CREATE TABLE rostos (id INT AUTO_INCREMENT PRIMARY KEY,"
            " nome_imagem VARCHAR(255), embedding BLOB)"
        )
        cursor.execute("CREATE TABLE rosto_embeddings (rosto_id INT, dimension INT, value DOUBLE)")
        with sqlite3.connect(gallery_db) as source:
            for face_id, name, blob in source.execute(
                "SELECT id, img_name, embedding FROM face_meta"
            ):
                cursor.execute(
                    "INSERT INTO rostos (nome_imagem, embedding) VALUES (%s, %s)", (name, blob)
                )
                rosto_id = cursor.lastrowid
                cursor.executemany(
                    "INSERT INTO rosto_embeddings VALUES (%s, %s, %s)",
                    [
                        (rosto_id, d, v)
                        for d, v in source.execute(
                            "SELECT dimension, value FROM face_embeddings WHERE face_id = ?",
                            (face_id,),
                        )
                    ],
                )
        conn.commit()
        yield conn
        conn.close()


def _query_vector(gallery_db, name="img7.jpg"):
    with sqlite3.connect(gallery_db) as conn:
        (blob,) = conn.execute(
            "SELECT embedding FROM face_meta WHERE img_name LIKE ?", (f"%/{name}",)
        ).fetchone()
    return np.frombuffer(blob, dtype="<f4").tolist()


def _multi_face(gallery_db):
    with sqlite3.connect(gallery_db) as conn:
        return {
            n
            for (n,) in conn.execute(
                "SELECT img_name FROM face_meta GROUP BY img_name HAVING COUNT(*) > 1"
            )
        }


def test_the_published_text_is_not_sql(reader_tables, gallery_db):
    import pymysql

    cursor = reader_tables.cursor()
    with pytest.raises(
        pymysql.err.ProgrammingError,
        match=re.escape("near '\u2013 target) * (source \u2013 target)"),
    ):
        cursor.execute(reader_sql(_query_vector(gallery_db), published=True))
    # The curly quotes are worse: MySQL takes U+2018/U+2019 as letters of a name.
    with pytest.raises(pymysql.err.OperationalError, match="Unknown column"):
        cursor.execute("SELECT \u2018distance_squared\u2019")


def test_repaired_it_returns_the_right_rows_ranked_like_find(reader_tables, gallery_db):
    target = _query_vector(gallery_db)
    cursor = reader_tables.cursor()
    cursor.execute(reader_sql(target))
    got = cursor.fetchall()
    multi = _multi_face(gallery_db)
    (frame,) = facevec.find(target, gallery_db, similarity_search=True)
    # It groups by image, so a multi-face photo's faces are summed: compare the rest.
    expected = [
        (n, d) for n, d in zip(frame.img_name, frame.distance, strict=True) if n not in multi
    ]
    mine = [(n, math.sqrt(s)) for n, s in got if n not in multi]
    assert [n for n, _ in mine] == [n for n, _ in expected]
    np.testing.assert_allclose([d for _, d in mine], [d for _, d in expected], atol=1e-5)
    # < 100 is a squared FaceNet-scale cut: Dlib distances are below 1, so it keeps everything.
    assert len(got) == len({n for n in frame.img_name})


def test_with_dlibs_threshold_squared_it_returns_what_find_verifies(reader_tables, gallery_db):
    target = _query_vector(gallery_db)
    cursor = reader_tables.cursor()
    cursor.execute(reader_sql(target).replace("< 100", "< 0.36"))  # 0.6 ** 2
    got = {n for n, _ in cursor.fetchall()}
    (frame,) = facevec.find(target, gallery_db)
    multi = _multi_face(gallery_db)
    assert got - multi == set(frame.img_name) - multi
    assert len(got) >= 8


def seed_with_aliases(seed_sql: str) -> str:
    """The seed's query with the derived-table aliases PostgreSQL < 16 and MySQL require."""
    sql = seed_sql.replace(
        "            )\n        )\n        group by",
        "            ) as joined\n        ) as squared\n        group by",
    )
    return sql.replace(
        "        group by img_name\n    )\n    where",
        "        group by img_name\n    ) as distances\n    where",
    )


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_the_seeds_query_needs_only_aliases_on_the_servers(server, gallery_db, tmp_path):
    from test_find import seed_query

    from facevec.storage.database import connect_url
    from facevec.transfer import copy_gallery

    target = _query_vector(gallery_db)
    with fresh_database(server, tmp_path) as url:
        copy_gallery(gallery_db, url)
        conn, _, _ = connect_url(url)
        try:
            cursor = conn.cursor()
            verbatim = seed_query(target)
            with pytest.raises(Exception, match="alias|syntax"):
                cursor.execute(verbatim)
            conn.rollback()
            cursor = conn.cursor()
            cursor.execute(seed_with_aliases(verbatim))
            got = cursor.fetchall()
        finally:
            conn.close()
    multi = _multi_face(gallery_db)
    (frame,) = facevec.find(target, gallery_db, similarity_search=True)
    expected = [
        (n, d) for n, d in zip(frame.img_name, frame.distance, strict=True) if n not in multi
    ]
    mine = [(n, math.sqrt(float(s))) for n, s in got if n not in multi]
    assert [n for n, _ in mine] == [n for n, _ in expected]
    np.testing.assert_allclose([d for _, d in mine], [d for _, d in expected], atol=1e-5)
