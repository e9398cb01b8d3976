"""The people pages: everyone (/people), one person (/people/{id}).

Rendered on the server; every button calls an endpoint of people_actions or
people_routes from static/app.js, with the editing token. While the page is
locked (no token entered, or a read-only server) the edit controls are
disabled and a note says how to unlock them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from ..people import history, people_in_order, show, unassigned
from ..people.curate import counts, cover_of, suggestions
from . import pages
from .config import WebConfig
from .params import PageNumber, PersonId
from .security import config_of

views = APIRouter(include_in_schema=False)

UNASSIGNED_PER_PAGE = 120


@views.get("/people", response_class=HTMLResponse)
def people_page(
    request: Request,
    page: PageNumber = 1,
    hidden: bool = Query(False),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """Named people, then unnamed ones, each with a cover face; then the faces
    that belong to no one, to name, give to someone or set aside."""
    named, unnamed, covers = people_in_order(config.db, hidden=hidden)
    if hidden:  # faces are given to people in view, not to hidden ones
        visible_named, visible_unnamed, _ = people_in_order(config.db)
        choices = visible_named + visible_unnamed
    else:
        choices = named + unnamed
    total, loose = unassigned(config.db, UNASSIGNED_PER_PAGE, (page - 1) * UNASSIGNED_PER_PAGE)
    return pages.render(
        request,
        "people.html",
        named=named,
        unnamed=unnamed,
        covers=covers,
        showing_hidden=hidden,
        counts=counts(config.db),
        choices=choices,
        loose=_by_photo(config, loose),
        loose_total=total,
        page=page,
        pages=max(1, -(-total // UNASSIGNED_PER_PAGE)),
    )


def _by_photo(config: WebConfig, faces: list[Any]) -> list[dict[str, Any]]:
    photos: dict[str, list[Any]] = {}
    for face in faces:
        photos.setdefault(face.img_name, []).append(face)
    return [
        {"img_name": img_name, "faces": found, "url": pages.served_url(config, img_name)}
        for img_name, found in photos.items()
    ]


@views.get("/people/{person_id}", response_class=HTMLResponse)
def person_page(
    request: Request,
    person_id: PersonId,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """A person: their photos (faces selectable), the suggestions to confirm, and
    the forms to rename, hide, merge and undo."""
    view = show(config.db, person_id)
    named, unnamed, covers = people_in_order(config.db)
    others = [p for p in named + unnamed if p.id != person_id]
    return pages.render(
        request,
        "person.html",
        person=view.person,
        cover=cover_of(view),
        others=others,
        covers=covers,
        suggested=suggestions(config.db, person_id),
        photos=_by_photo(config, view.faces),
        edits=history(config.db, 8),
    )
