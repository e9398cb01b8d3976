"""copy and import into a gallery of another model: the models are named first, before
the people, whatever either gallery holds."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import ModelMismatchError
from facevec.transfer import copy_gallery, export_parquet, import_parquet


@pytest.fixture
def facenet_db(tmp_path):
    """A Facenet512 gallery with a person of its own."""
    db = tmp_path / "facenet.db"
    rng = np.random.default_rng(7)
    facevec.add(db, ["a.jpg", "b.jpg"], list(rng.random((2, 512))), model_name="Facenet512")
    facevec.people.new_person(db, [1, 2], "Ann")
    return db


def test_copy_names_both_models_before_the_people(gallery_db, facenet_db):
    message = f"{facenet_db} holds Facenet512 vectors (512 dimensions) and {gallery_db} Dlib"
    with pytest.raises(ModelMismatchError, match=re.escape(message)):
        copy_gallery(gallery_db, facenet_db)
    result = CliRunner().invoke(cli, ["copy", str(gallery_db), str(facenet_db), "--quiet"])
    assert result.exit_code == 1 and "people" not in result.output.split(":", 2)[1]
    assert "use model" not in result.output  # copy has no model to choose
    assert facevec.info(facenet_db)["faces"] == 2  # nothing written


def test_import_names_both_models_before_the_people(gallery_db, facenet_db, tmp_path):
    export_parquet(gallery_db, tmp_path / "out", progress=False)
    for people in (True, False):
        with pytest.raises(ModelMismatchError, match="holds Facenet512 vectors .* Dlib vectors"):
            import_parquet(tmp_path / "out", facenet_db, people=people, progress=False)
    assert facevec.info(facenet_db)["faces"] == 2
