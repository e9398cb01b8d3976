"""Who is in a searched photo: the search page's answer per face (identify), and
whose each match is. Used by pages.search_results when the people capability is
installed (kept apart from people_pages, which imports pages).
"""

from __future__ import annotations

from typing import Any

from ..errors import FacevecError
from ..people import identify, who_are
from .config import WebConfig


def who_in_search(
    config: WebConfig,
    data: bytes,
    result: dict[str, Any],
    metric: str = "euclidean",
    strategy: str | None = None,
) -> None:
    """Who each face of a searched photo is (identify: matched, ambiguous or not
    known), and whose each match is (a person, named or not), into `result`.

    find has just embedded `data`: identify takes its faces from the embedding cache
    (facevec.engine.embed), so the photo goes through the network once."""
    found = who_are(config.db, [m["face_id"] for f in result["faces"] for m in f["matches"]])
    for face in result["faces"]:
        for match in face["matches"]:
            who = found.get(match["face_id"])
            match["person_id"] = None if who is None else who.person_id
            match["person"] = None if who is None else who.label
    try:
        answers = identify(data, config.db, distance_metric=metric, strategy=strategy)
        answers = answers.to_dict("records")
    except FacevecError:  # a gallery with nobody in it yet: the matches say enough
        return
    for face, answer in zip(result["faces"], answers, strict=False):
        face["identified"] = {
            "decision": answer["decision"],
            "person_id": None if answer["decision"] == "unknown" else int(answer["person_id"]),
            "person": answer["person"],
            "second": answer["second_person"],
        }
