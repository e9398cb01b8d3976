"""People: recognise, cluster, name and merge the people of a gallery.

- ``identify(img, db)``: who each face of a photo is (matched / ambiguous / unknown);
- ``cluster(db)``: faces without a person become suggested people, incrementally;
- ``list_people``, ``show`` (with a contact sheet), ``name``, ``merge``, ``split``,
  ``move``, ``reject``, ``confirm``, ``undo``, ``history``: look and correct;
- ``calibrate(db)``: this gallery's thresholds from its labelled people.

Everything is stored in the gallery's own database (tables ``person``,
``person_face``, ``person_rejection``, ...; views ``people``, ``person_faces``,
``person_photos``), on SQLite, PostgreSQL and MariaDB alike.
"""

from .calibration import calibrate
from .clustering import ClusterReport, cluster
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
    "cluster",
    "confirm",
    "history",
    "identify",
    "list_people",
    "merge",
    "move",
    "name",
    "reject",
    "show",
    "split",
    "undo",
]
