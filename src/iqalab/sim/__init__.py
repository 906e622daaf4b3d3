"""The built-in data source: a physically based camera simulator and a virtual rater panel.

- :mod:`iqalab.sim.scenes`    - shipped photographs, linearised, cropped, relit; people composited with known
  person/face boxes and landmarks; surveillance face crops.
- :mod:`iqalab.sim.camera`    - :class:`CameraParams` (the 7 TuningIQA parameters + JPEG) and :func:`render`.
- :mod:`iqalab.sim.observers` - ground-truth quality per attribute, :class:`Panel` (votes, screening, MOS,
  refined pairs, JOD scaling, :meth:`Panel.prefer`).
- :mod:`iqalab.sim.builders`  - ``build(name, root, seed, **sizes)`` for ``fglive_sim``, ``portrait_sim``,
  ``face_sim``, ``ugc_sim``; :func:`scene_pool` for gMAD and the tuning study.
"""

from iqalab.sim.camera import CameraParams, auto_params, capture, render
from iqalab.sim.observers import Panel, true_quality

__all__ = ["CameraParams", "Panel", "auto_params", "capture", "render", "true_quality"]
