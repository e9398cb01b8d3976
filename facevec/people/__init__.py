"""People: recognise, cluster, name and merge the people of a gallery.

- ``identify(img, db)``: who each face of a photo is (matched / ambiguous / unknown);
- ``cluster(db)``: faces without a person become suggested people, incrementally;
- ``list_people``, ``show`` (with a contact sheet), ``name``, ``merge``, ``split``,
  ``move``, ``reject``, ``confirm``, ``undo``, ``history``: look and correct;
- ``people_in_order``, ``hide``, ``choose_cover``, ``unassigned``, ``new_person``,
  ``dismiss``, ``who_are``: what the people page does (people/curate.py);
- ``calibrate(db)``: this gallery's thresholds from its labelled people.

Everything is stored in the gallery's own database (tables ``person``,
``person_face``, ``person_rejection``, ...; views ``people``, ``person_faces``,
``person_photos``), on SQLite, PostgreSQL and MariaDB alike.
"""

from .calibration import calibrate
from .clustering import ClusterReport, cluster
from .curate import choose_cover, dismiss, hide, new_person, people_in_order, unassigned, who_are
from .edit import (
    Change,
    PersonView,
    confirm,
    history,
    list_people,
    merge,
    move,
    name,
    reject,
    show,
    split,
    undo,
)
from .identify import identify

__all__ = [
    "Change",
    "ClusterReport",
    "PersonView",
    "calibrate",
    "choose_cover",
    "cluster",
    "confirm",
    "dismiss",
    "hide",
    "history",
    "identify",
    "list_people",
    "merge",
    "move",
    "name",
    "new_person",
    "people_in_order",
    "reject",
    "show",
    "split",
    "unassigned",
    "undo",
    "who_are",
]
