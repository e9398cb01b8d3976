"""A detected face: what the engine finds in a photo and the storage layer stores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Face:
    """One face: its vector, where it is in the photo, and its crop."""

    face_index: int
    embedding: np.ndarray  # float32, 1-D
    x: int | None = None
    y: int | None = None
    w: int | None = None
    h: int | None = None
    left_eye: tuple[int, int] | None = None
    right_eye: tuple[int, int] | None = None
    confidence: float = 0.0
    face_png: bytes = b""  # the aligned face exactly as fed to the model
    sharpness: float | None = None  # variance of the Laplacian of the aligned face

    @classmethod
    def from_vector(cls, vector: np.ndarray, face_index: int = 0) -> Face:
        """A face known only by its embedding (precomputed, or a query vector)."""
        return cls(face_index, np.asarray(vector, dtype=np.float32))

    def area(self) -> dict[str, object]:
        """Where the face is, as deepface reports a facial area."""
        return {
            "x": self.x,
            "y": self.y,
            "w": self.w,
            "h": self.h,
            "left_eye": self.left_eye,
            "right_eye": self.right_eye,
        }
