"""The face engine: deepface detects, aligns and embeds faces.

- ``models``: deepface's model and detector names, thresholds, weight files, and
  loading a network once per process;
- ``embed``: a photo's bytes to :class:`facevec.face.Face` records.

deepface (and TensorFlow) are imported only when a network is needed, so the
rest of facevec works without the ``[deepface]`` extra.
"""
