"""How faces are detected and embedded: deepface's settings in one value."""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_MODEL = "Dlib"
DEFAULT_DETECTOR = "dlib"


@dataclass(frozen=True)
class EmbedOptions:
    """deepface's settings for detecting and embedding faces.

    Frozen and hashable: with a photo's content hash it is the key of the
    embedding cache, so a photo embedded twice with the same settings runs the
    network once.
    """

    model_name: str = DEFAULT_MODEL
    detector_backend: str = DEFAULT_DETECTOR
    align: bool = True
    expand_percentage: int = 0
    normalization: str = "base"
    # False: facevec's fast path (engine/detect.py); True: deepface's own detection,
    # so vectors equal DeepFace.represent's (at deepface's cost).
    exact: bool = False

    def as_kwargs(self) -> dict[str, object]:
        return asdict(self)


DEFAULT_OPTIONS = EmbedOptions()
