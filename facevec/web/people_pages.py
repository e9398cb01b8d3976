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

from ..parameters import MAX_ID
from ..people import history, show, unassigned
from ..people.curate import counts, cover_of, suggestions
from ..people.curate import people_page as people_page_of
from . import pages
from .config import WebConfig
from .params import Offset, PageNumber, PersonId
from .security import config_of

views = APIRouter(include_in_schema=False)

UNASSIGNED_PER_PAGE = 120
PEOPLE_PER_PAGE = 60


@views.get("/people", response_class=HTMLResponse)
def people_page(
    request: Request,
    page: PageNumber = 1,
    hidden: bool = Query(False),
    shown: int = Query(PEOPLE_PER_PAGE, ge=1, le=MAX_ID, description="People shown."),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """Named people, then unnamed ones, each with a cover face, the first `shown`
    of them ("Show more" adds the next ones); then the faces that belong to no one,
    to name, give to someone or set aside."""
    listing = people_page_of(config.db, hidden=hidden, limit=shown)
    # Faces are given to people in view, not to hidden ones.
    choices = people_page_of(config.db, with_covers=False).people
    total, loose = unassigned(config.db, UNASSIGNED_PER_PAGE, (page - 1) * UNASSIGNED_PER_PAGE)
    return pages.render(
        request,
        "people.html",
        named=[p for p in listing.people if p.name is not None],
        unnamed=[p for p in listing.people if p.name is None],
        covers=listing.covers,
        people_total=listing.total,
        named_total=listing.named,
        shown=len(listing.people),
        per_page=PEOPLE_PER_PAGE,
        showing_hidden=hidden,
        counts=counts(config.db),
        choices=choices,
        loose=_by_photo(config, loose),
        loose_total=total,
        page=page,
        pages=max(1, -(-total // UNASSIGNED_PER_PAGE)),
    )


@views.get("/people/more", response_class=HTMLResponse)
def more_people(
    request: Request,
    offset: Offset = 0,
    hidden: bool = Query(False),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """The next people of the list, as the cards the people page appends ("Show more")."""
    listing = people_page_of(config.db, hidden=hidden, limit=PEOPLE_PER_PAGE, offset=offset)
    return pages.render(
        request,
        "_people_cards.html",
        people=listing.people,
        covers=listing.covers,
        total=listing.total,
        end=offset + len(listing.people),
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
    # Everyone else, for the move and merge lists: no cover read for each (the merge
    # dialog asks for the one chosen).
    others = [p for p in people_page_of(config.db, with_covers=False).people if p.id != person_id]
    return pages.render(
        request,
        "person.html",
        person=view.person,
        cover=cover_of(view),
        others=others,
        suggested=suggestions(config.db, person_id),
        photos=_by_photo(config, view.faces),
        edits=history(config.db, 8),
    )
