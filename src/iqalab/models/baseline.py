"""Plain backbone + per-attribute MLP heads: the simplest trainable BIQA model, and the pipeline's first model.

This is the "fine-tuned backbone regression" baseline used in all four papers' comparison tables (e.g. the
ResNet-50 / MobileNetV3 rows of TuningIQA Table 2): a timm backbone's pooled features feed one small MLP per
quality attribute, trained with L1 on MOS scaled to [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqalab.models.backbones import create_backbone
from iqalab.models.base import IQAModel
from iqalab.models.registry import register


def mlp_head(in_features: int, hidden: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear-GELU-Dropout-Linear regression head producing one score."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


@register("backbone_mlp")
class BackboneMLP(IQAModel):
    """timm backbone, global pooling, one MLP head per attribute (sigmoid output in [0, 1])."""

    inputs = frozenset({"image"})
    paper = "Baseline: fine-tuned backbone regression (as compared against in all four seed papers)"

    def __init__(self, attributes: list[str], backbone: str = "resnet18", pretrained: bool | str | Path = False,
                 hidden: int = 128, dropout: float = 0.1, backbone_lr_scale: float = 1.0) -> None:
        super().__init__(attributes)
        self.backbone = create_backbone(backbone, pretrained=pretrained)
        features = int(self.backbone.num_features)
        self.heads = nn.ModuleDict({a: mlp_head(features, hidden, dropout) for a in self.attributes})
        self.backbone_lr_scale = backbone_lr_scale

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features [B, C]."""
        return self.backbone(image)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        feats = self.features(batch["image"])
        return {a: torch.sigmoid(head(feats).squeeze(-1)) for a, head in self.heads.items()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [
            {"params": list(self.backbone.parameters()), "lr": lr * self.backbone_lr_scale},
            {"params": list(self.heads.parameters()), "lr": lr},
        ]
