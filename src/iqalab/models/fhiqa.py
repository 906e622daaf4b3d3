"""FHIQA (FULL-HyperIQA): SEM-HyperIQA whose score is rescaled on *every* likely scene and fused by the scene
probabilities, so images of unseen scenes borrow the scales of the training scenes they resemble.

Paper: N. Chahine, S. Ferradans, J. Vazquez-Corral, J. Ponce, "Generalized Portrait Quality Assessment"
(seed ``001``), Section II-b, Eq. (1), Fig. 1; training as Sec. IV-B. Code announced at
github.com/DXOMARK-Research/PIQ2023 (the FHIQA part was not available to us; the SEM-HyperIQA parts there were).

What is implemented
-------------------
Everything of :class:`iqalab.models.hyperiqa.SemHyperIQA` (HyperIQA backbone, LDA, hyper network, random patches,
scene classifier on the concatenated patch features, rescaler MLP, loss ``Huber + 0.5 CE``) with the fusion of
Eq. (1)::

    Q_f = sum_{i in top-k} P_si (a_i Q_p + b_i) / sum_{j in top-k} P_sj

``Q_p`` is the pre-quality (mean patch score of the target network), ``P`` the softmax scene vector, and
``(a_i, b_i)`` the rescaler's output for the one-hot vector of scene ``i`` ("we split the predicted classification
vector into separate one-hot encodings and then rescale the pre-quality score on each of the training scenes").
The rescaler is evaluated once on the identity matrix, giving a per-scene table (:meth:`FHIQA.scene_table`).

Readings (each a constructor argument)
--------------------------------------
- ``head_init``: the scene classifier's and rescaler's initialisation, as SEM-HyperIQA's
  (:mod:`iqalab.models.hyperiqa`): ``"identity"`` (default) starts every scene's (a, b) at (1, 0); ``"release"``
  applies PIQ23's SEM-HyperIQA init (Kaiming-normal weights, zero biases: ``weights_init_xavier`` of the release's
  ``src/models/archs/sem_hyperiqa_util.py``) to the same layers, FHIQA's own code not being public; each scene's
  (a, b), the rescaler of its one-hot vector, then starts random around 0 with a root-mean-square of about
  ``sqrt(2 / S)`` (0.26 for 30 scenes) instead of (1, 0).
- ``top_k`` (paper: 3, 5, 10, 25): the same fusion in training and evaluation (the text describes one forward
  pass); ``top_k >= n_scenes`` uses every scene. Gradients of the quality loss flow into both the rescaler and
  the scene probabilities.
- Several attributes: one classifier (the scene is a property of the image) and one (a, b) per scene *and*
  attribute, i.e. the rescaler outputs ``2 * A`` numbers per scene.
- The scene space is the training scenes (Sec. II-b: "the vectorial space of scenes defined in the training
  set"; Sec. III: 15 of PIQ23's 50 scenes are held out for testing): the engine passes the training split's
  scenes as ``scenes`` (:meth:`iqalab.models.hyperiqa.SemHyperIQA.dataset_kwargs`), so the classifier has one
  class per training scene, the rescaler one ``(a, b)`` per training scene, and an image of an unseen test scene
  is rescaled on the training scenes it resembles. The checkpoint records ``scenes``, so scoring rebuilds the
  same space.

Exposure and Details on the face region (Sec. IV-D)
---------------------------------------------------
"For the Overall attribute, we utilize the entire image, in contrast to other attributes where the evaluation is
confined solely to the face region." ``regions="piq23"`` (the default) draws the patches of ``details`` and
``exposure`` inside the face box padded by ``face_margin`` (10 % of its width / height on each side) and those of
every other attribute from the whole image (:meth:`iqalab.models.hyperiqa.HyperIQA.region_patch_outputs`; a
mapping ``{attribute: "image" | "face"}`` chooses otherwise, ``None`` = the whole image for all). Patches have the
protocol's side; a face smaller than that is taken whole and resized to it
(:func:`iqalab.models.hyperiqa.sample_region_patches`). The scene classifier reads the whole-image patches (the face patches when every attribute
is judged on the face, as in the paper's one-model-per-attribute training). The face boxes come from the dataset
(the simulator's) or from detection at ingest: facenet-pytorch MTCNN (``datasets.<name>.detect``,
:mod:`iqalab.data.regions`); the paper does not say how PIQ23's face regions were obtained. A dataset never
searched for faces is refused at training unless ``allow_missing_regions: true``; an image where the detector
found no face is judged on the whole image and counted in the table caption (``regions_missing``).
Readings: the margin, the resize of small faces, and the patch side kept at the protocol's (clipped to the image)
rather than to the face. With ``train.resolution: native`` the loader cuts the face-region patches from the native
image by the same rule (:class:`iqalab.data.loaders.PatchItems`, ``face_scales``): the file's own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from iqalab.models.hyperiqa import HeadInit, SemHyperIQA
from iqalab.models.registry import register


def topk_rescale(pre_quality: torch.Tensor, probs: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                 k: int) -> torch.Tensor:
    """Eq. (1) of seed 001: the top-``k`` probability-weighted mean of the per-scene rescaled scores.

    Args:
        pre_quality: ``Q_p`` [B, A].
        probs: scene probabilities ``P`` [B, S].
        scale, offset: per-scene ``a`` and ``b`` [S, A].
        k: number of scenes kept (clipped to ``S``).

    Returns:
        ``Q_f`` [B, A].
    """
    k = max(1, min(int(k), probs.shape[-1]))
    top_p, top_idx = probs.topk(k, dim=-1)  # [B, k]
    rescaled = scale[top_idx] * pre_quality.unsqueeze(1) + offset[top_idx]  # [B, k, A]
    weights = top_p / top_p.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return (weights.unsqueeze(-1) * rescaled).sum(dim=1)


@register("fhiqa")
class FHIQA(SemHyperIQA):
    """FULL-HyperIQA (seed 001): SEM-HyperIQA with per-scene rescaling fused over the top-k scene probabilities."""

    paper = ("N. Chahine, S. Ferradans, J. Vazquez-Corral, J. Ponce, 'Generalized Portrait Quality Assessment' "
             "(FHIQA), 2024")
    smoke_params: ClassVar[dict[str, Any]] = {**SemHyperIQA.smoke_params, "top_k": 2}

    def __init__(self, attributes: list[str], n_scenes: int | None = None, top_k: int = 5, backbone: str = "resnet50",
                 pretrained: bool | str | Path = False, patch_size: int = 224, n_patches: int = 5,
                 test_rounds: int = 5, reference_side: int | None = None, hyper_in: int = 112,
                 target_in: int = 224, lda_out: int = 16, target_sizes: Sequence[int] = (112, 56, 28, 14),
                 feature_size: int = 7, loss: str = "huber", huber_delta: float = 0.1,
                 backbone_lr_scale: float = 0.1, eval_seed: int = 0, scene_pool_width: int | None = None,
                 classifier_layers: int = 3, classifier_hidden: int = 500, rescaler_layers: int = 3,
                 rescaler_hidden: int = 100, ce_weight: float = 0.5, regions: dict[str, str] | str | None = "piq23",
                 face_margin: float = 0.1, allow_missing_regions: bool = False,
                 scenes: Sequence[str] | None = None, dataset_scenes: Sequence[str] | None = None,
                 scales: Sequence[Sequence[int]] | None = None, mos_span: float | None = None,
                 loss_units: str = "mos", patch_rate: int | None = None, head_init: HeadInit = "identity") -> None:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        super().__init__(attributes, n_scenes=n_scenes, backbone=backbone, pretrained=pretrained,
                         patch_size=patch_size, n_patches=n_patches, test_rounds=test_rounds,
                         reference_side=reference_side, hyper_in=hyper_in, target_in=target_in, lda_out=lda_out,
                         target_sizes=target_sizes, feature_size=feature_size, loss=loss, huber_delta=huber_delta,
                         backbone_lr_scale=backbone_lr_scale, eval_seed=eval_seed,
                         scene_pool_width=scene_pool_width, classifier_layers=classifier_layers,
                         classifier_hidden=classifier_hidden, rescaler_layers=rescaler_layers,
                         rescaler_hidden=rescaler_hidden, ce_weight=ce_weight, regions=regions,
                         face_margin=face_margin, allow_missing_regions=allow_missing_regions, scenes=scenes,
                         dataset_scenes=dataset_scenes, scales=scales, mos_span=mos_span, loss_units=loss_units,
                         patch_rate=patch_rate, head_init=head_init)
        self.top_k = int(top_k)

    def scene_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-scene ``(a, b)``, each [S, A]: the rescaler applied to every scene's one-hot vector."""
        eye = torch.eye(self.n_scenes, device=self.rescaler[0].weight.device,
                        dtype=self.rescaler[0].weight.dtype)
        return self.rescale_params(eye)

    def fuse(self, pre_quality: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Eq. (1): rescale ``Q_p`` on each of the top-k scenes and average with the normalised probabilities."""
        scale, offset = self.scene_table()
        return topk_rescale(pre_quality, logits.softmax(dim=-1), scale, offset, self.top_k)
