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
from ..people import history, unassigned
from ..people.curate import MAX_PAGE, counts, person_faces_page
from ..people.curate import people_page as people_page_of
from . import pages
from .config import WebConfig
from .params import Offset, PageNumber, PersonId
from .security import config_of

views = APIRouter(include_in_schema=False)

UNASSIGNED_PER_PAGE = 120
PEOPLE_PER_PAGE = 60
FACES_PER_PAGE = 100  # a person's faces per "Show more faces"
SUGGESTIONS_SHOWN = 48  # suggestions to confirm at once (the rest after these)


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
    shown: int = Query(FACES_PER_PAGE, ge=1, le=MAX_ID, description="Faces shown."),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """A person: the photos of their first `shown` faces (selectable; "Show more
    faces" adds the next ones), the suggestions to confirm, and the forms to rename,
    hide, merge and undo. One page of faces is read, however many the person has;
    the move and merge pickers ask the API for the people typed."""
    page = person_faces_page(config.db, person_id, min(shown, MAX_PAGE))
    faces = list(page.faces)
    while len(faces) < min(shown, page.total):  # no script: "Show more" asks for more
        more = person_faces_page(config.db, person_id, MAX_PAGE, len(faces)).faces
        if not more:
            break
        faces.extend(more)
    suggested = person_faces_page(config.db, person_id, SUGGESTIONS_SHOWN, source="suggested")
    return pages.render(
        request,
        "person.html",
        person=page.person,
        cover=page.cover,
        suggested=suggested.faces,
        suggested_total=suggested.total,
        photos=_by_photo(config, faces),
        faces_total=page.total,
        shown=len(faces),
        per_page=FACES_PER_PAGE,
        edits=history(config.db, 8),
    )


@views.get("/people/{person_id}/more", response_class=HTMLResponse)
def more_faces(
    request: Request,
    person_id: PersonId,
    offset: Offset = 0,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """The next photos of a person, as the person page appends them ("Show more faces")."""
    page = person_faces_page(config.db, person_id, FACES_PER_PAGE, offset)
    return pages.render(
        request,
        "_person_photos_more.html",
        photos=_by_photo(config, page.faces),
        total=page.total,
        end=offset + len(page.faces),
    )
