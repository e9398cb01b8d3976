"""People clustering on Spark (local[2]) equals the single-machine clustering."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from backends import BACKENDS
from people_data import clustered_vectors

import facevec
from facevec.errors import InvalidParameterError
from facevec.people.clustering import cluster_vectors
from facevec.spark import cluster_people, read_gallery
from facevec.spark.people import KEY_SHIFT


@pytest.fixture(scope="module")
def people_gallery(tmp_path_factory):
    """240 Dlib-like faces of ~50 people in two SQLite shards and the merged file;
    faces 0-1 and 2-3 share a photo each (two faces of a photo are never one person)."""
    root = tmp_path_factory.mktemp("spark-people")
    vectors, labels = clustered_vectors(240, seed=5)
    names = [f"p{label:03d}/face{row:03d}.jpg" for row, label in enumerate(labels)]
    names[1], names[3] = names[0], names[2]
    shards, merged = [root / "a.db", root / "b.db"], root / "merged.db"
    for shard, part in zip(shards, (slice(0, 130), slice(130, 240)), strict=True):
        facevec.add(shard, names[part], vectors[part], people=False)  # no person yet
        facevec.add(merged, names[part], vectors[part], people=False)
    keys = [(0 << KEY_SHIFT) + i + 1 for i in range(130)] + [
        (1 << KEY_SHIFT) + i + 1 for i in range(110)
    ]
    return {"shards": [str(s) for s in shards], "vectors": vectors, "names": names, "keys": keys}


def groups(labels) -> set[frozenset[int]]:
    members = defaultdict(set)
    for row, label in enumerate(labels):
        if label is not None and label >= 0:
            members[label].add(row)
    return {frozenset(rows) for rows in members.values()}


@pytest.mark.parametrize(
    "options",
    [{}, {"distance_metric": "cosine"}, {"threshold": 0.45, "min_faces": 1, "neighbours": 4}],
    ids=["euclidean", "cosine", "tight-singletons"],
)
def test_spark_clustering_equals_the_single_machine_clustering(spark, people_gallery, options):
    vectors, names = people_gallery["vectors"], people_gallery["names"]
    photos = np.unique(np.asarray(names, dtype=object), return_inverse=True)[1]
    metric = options.get("distance_metric", "euclidean")
    expected = cluster_vectors(
        vectors,
        photos,
        metric=metric,
        threshold=options.get("threshold"),
        min_faces=options.get("min_faces", 2),
        neighbours=options.get("neighbours", 10),
    )
    gallery = read_gallery(spark, people_gallery["shards"], rows_per_partition=50)
    result = cluster_people(gallery, **options).toPandas()
    assert len(result) == len(vectors)
    row_of_key = {key: row for row, key in enumerate(people_gallery["keys"])}
    result["row"] = [
        row_of_key[(shard << KEY_SHIFT) + face_id]
        for shard, face_id in zip(result["shard"], result["id"], strict=True)
    ]
    result = result.sort_values("row")
    assert list(result["img_name"]) == names
    mine = [None if np.isnan(c) else int(c) for c in result["cluster"].astype(float)]
    theirs = groups(expected.cluster.tolist())
    assert groups(mine) == theirs
    assert len(theirs) > 20  # a real clustering, not one blob or nothing
    assert (np.array(mine, dtype=object) == None).sum() == (expected.cluster < 0).sum()  # noqa: E711
    scores = result["score"].to_numpy(dtype=float)
    assert np.allclose(scores, expected.score, equal_nan=True, atol=1e-9)
    # Two faces of one photo never share a cluster.
    assert mine[0] is None or mine[0] != mine[1]
    assert mine[2] is None or mine[2] != mine[3]


def test_bad_parameters_are_named(spark, people_gallery):
    gallery = read_gallery(spark, people_gallery["shards"])
    with pytest.raises(InvalidParameterError, match="min_faces"):
        cluster_people(gallery, min_faces=0)
    with pytest.raises(InvalidParameterError, match="neighbours"):
        cluster_people(gallery, neighbours=True)
    with pytest.raises(InvalidParameterError, match="threshold"):
        cluster_people(gallery, threshold=-1.0)


def test_cli_spark_people_writes_the_clustering(spark, people_gallery, tmp_path):
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from facevec.cli import cli

    out = tmp_path / "people"
    args = ["spark", "people", "--out", str(out), "--quiet", "--min-faces", "3"]
    for shard in people_gallery["shards"]:
        args += ["--gallery", shard]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pandas()
    row_of_key = {key: row for row, key in enumerate(people_gallery["keys"])}
    rows = [
        row_of_key[(s << KEY_SHIFT) + i] for s, i in zip(table["shard"], table["id"], strict=True)
    ]
    labels = [None] * len(rows)
    for row, cluster in zip(rows, table["cluster"], strict=True):
        labels[row] = None if cluster != cluster or cluster is None else int(cluster)
    photos = np.unique(np.asarray(people_gallery["names"], dtype=object), return_inverse=True)[1]
    expected = cluster_vectors(people_gallery["vectors"], photos, min_faces=3)
    assert groups(labels) == groups(expected.cluster.tolist())
    people = len(groups(labels))
    assert result.output.strip().startswith(f"{people} people (")
    assert result.output.strip().endswith(f"among 240 faces in 2 shards, written to {out}")
    again = CliRunner().invoke(cli, args)  # --out exists: refused
    assert again.exit_code == 1 and "exists" in again.output


def people_state(db) -> dict:
    """{frozenset of face ids: (name, sorted (face, source, rounded score))} per person."""
    from facevec.storage.database import open_database

    with open_database(db, create=False) as database:
        rows = database.query(
            "SELECT p.id, p.name, pf.face_id, pf.source, pf.score FROM person p"
            " JOIN person_face pf ON pf.person_id = p.id"
        )
    people = defaultdict(list)
    names = {}
    for person, name, face, source, score in rows:
        names[int(person)] = name
        people[int(person)].append(
            (int(face), source, None if score is None else round(float(score), 4))
        )
    return {
        frozenset(face for face, _, _ in faces): (names[p], tuple(sorted(faces)))
        for p, faces in people.items()
    }


def a_users_word(db) -> dict:
    """A first clustering, then a user's word: the largest person named, the second
    confirmed, a face rejected from the first, every face of a third rejected from
    it (free again, and never to rejoin), a face dismissed. What was said."""
    facevec.people.cluster(db, progress=False)
    by_size = sorted(facevec.people.list_people(db), key=lambda p: (-p.faces, p.id))
    named, confirmed, emptied = by_size[0], by_size[1], by_size[2]
    facevec.people.name(db, named.id, "Ada")
    facevec.people.confirm(db, confirmed.id)
    rejected = facevec.people.show(db, named.id).faces[0].face_id
    facevec.people.reject(db, [rejected])
    freed = [face.face_id for face in facevec.people.show(db, emptied.id).faces]
    facevec.people.reject(db, freed)
    dismissed = facevec.people.show(db, confirmed.id).faces[-1].face_id
    facevec.people.dismiss(db, [dismissed])
    return {
        "named": named.id,
        "confirmed": confirmed.id,
        "emptied": emptied.id,
        "rejected": rejected,
        "freed": freed,
        "dismissed": dismissed,
    }


@pytest.fixture(scope="module")
def small_people_db(tmp_path_factory):
    vectors, labels = clustered_vectors(150, seed=11)
    names = [f"p{label:03d}/face{row:03d}.jpg" for row, label in enumerate(labels)]
    path = tmp_path_factory.mktemp("spark-people-write") / "gallery.db"
    facevec.add(path, names, vectors, people=False)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_spark_people_written_back_then_people_list(
    spark, small_people_db, gallery_copy_on, backend
):
    from click.testing import CliRunner

    from facevec.cli import cli
    from facevec.spark.people_write import write_people

    db, twin = (gallery_copy_on(small_people_db, backend) for _ in range(2))
    said = a_users_word(db)
    assert a_users_word(twin) == said  # the same word on both copies
    before = people_state(db)
    free_before = len(said["freed"]) + 1
    assert free_before > 2

    # The twin: people cluster on one machine. The gallery: Spark, written back.
    expected = facevec.people.cluster(twin, progress=False)
    gallery = read_gallery(spark, [db], rows_per_partition=40)
    result = cluster_people(gallery)
    report = write_people(gallery, result, 2, expected.threshold)
    assert report.edit_id is not None
    assert (report.unassigned, report.joined_existing, report.new_people) == (
        expected.unassigned,
        expected.joined_existing,
        expected.new_people,
    )
    after = people_state(db)
    assert after == people_state(twin)

    # A user's word stands: every assignment made before is there as it was (Ada
    # named, the confirmed faces confirmed); the rejected and dismissed faces are
    # in no person they were taken from.
    def assignments(state):
        return {(face, name, source) for name, rows in state.values() for face, source, _ in rows}

    assert assignments(before) < assignments(after)
    assert any(source == "suggested" for _, _, source in assignments(after) - assignments(before))
    ada = [faces for faces, (name, _) in after.items() if name == "Ada"]
    assert len(ada) == 1 and said["rejected"] not in ada[0]
    assert said["dismissed"] not in {face for faces in after for face in faces}
    # people list on the gallery shows them; people undo takes the run back.
    listed = CliRunner().invoke(cli, ["people", "list", "--db", db, "--format", "csv"])
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.output.strip().splitlines()[1:] if line.split(",")[2] != "0"]
    assert len(lines) == len(after)  # every person with faces (the emptied one has none)
    assert any(line.split(",")[1] == "Ada" for line in lines)
    undone = CliRunner().invoke(cli, ["people", "undo", "--db", db])
    assert undone.exit_code == 0 and undone.output.startswith("undid: clustered ")
    assert people_state(db) == before


def test_cli_spark_people_write_then_people_list(spark, small_people_db, people_gallery, tmp_path):
    import shutil

    from click.testing import CliRunner

    from facevec.cli import cli

    db, twin = tmp_path / "gallery.db", tmp_path / "twin.db"
    shutil.copy(small_people_db, db)
    shutil.copy(small_people_db, twin)
    facevec.people.cluster(twin, progress=False)
    args = ["spark", "people", "--gallery", str(db), "--write", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("clustered 150 faces: 0 joined existing people, ")
    assert f"facevec people undo --db {db}" in result.output
    assert people_state(db) == people_state(twin)
    listed = CliRunner().invoke(cli, ["people", "list", "--db", str(db), "--format", "csv"])
    assert len(listed.output.strip().splitlines()) - 1 == len(people_state(twin)) > 10
    again = CliRunner().invoke(cli, args)  # nothing left to group: nothing written
    assert again.exit_code == 0 and "0 new people" in again.output
    assert people_state(db) == people_state(twin)
    # Shards cannot take people back: refused before any work, nothing written.
    shards = ["spark", "people", "--write", "--quiet"]
    for shard in people_gallery["shards"]:
        shards += ["--gallery", shard]
    refused = CliRunner().invoke(cli, shards)
    assert refused.exit_code == 1 and "one database" in refused.output
    neither = CliRunner().invoke(cli, ["spark", "people", "--gallery", str(db)])
    assert neither.exit_code == 2 and "--out" in neither.output


def test_a_users_word_given_while_spark_computes_wins(spark, small_people_db, tmp_path):
    import shutil

    from facevec.errors import PeopleConflictError
    from facevec.spark.people_write import write_people

    db = tmp_path / "gallery.db"
    shutil.copy(small_people_db, db)
    gallery = read_gallery(spark, [str(db)])
    result = cluster_people(gallery).persist()
    grouped = result.where("cluster IS NOT NULL").select("id").toPandas()["id"]
    face = int(grouped.iloc[0])
    # Meanwhile, a user says who that face is.
    facevec.people.new_person(db, [face], "Grace")
    before = people_state(db)
    with pytest.raises(PeopleConflictError, match="run it again"):
        write_people(gallery, result, 2, 0.552)
    assert people_state(db) == before  # only the user's word
    result.unpersist()
