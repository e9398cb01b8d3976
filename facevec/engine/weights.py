"""Where model weights live: deepface's folder ($DEEPFACE_HOME/.deepface/weights)."""

from __future__ import annotations

import os


def deepface_home() -> str:
    """Where deepface keeps its weights: $DEEPFACE_HOME, else the home directory."""
    return os.environ.get("DEEPFACE_HOME") or os.path.expanduser("~")


def weights_dir() -> str:
    return os.path.join(deepface_home(), ".deepface", "weights")
