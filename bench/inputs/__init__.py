"""The input stage: a dataset and a config turned into batches on the device.

:func:`create_inputs` picks one of three paths and returns an :class:`Inputs`; the trainer
sees only ``train_batches(epoch)``, ``evaluate(model, split, ks)`` and ``input_dim``:

* features (:class:`FeatureInputs`): the feature matrix on the device, index batches;
* images (:class:`ImageInputs`): uint8 pixels from the decoded-image store
  (:mod:`bench.inputs.store`), collated as uint8, copied to the device, then one batched
  augmentation pass there (:mod:`bench.inputs.augment`);
* frozen backbone (``model.freeze_backbone: true`` on images): the images become cached
  backbone features once (:mod:`bench.inputs.frozen`), then the features path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from bench.config import TrialConfig

from bench.data.base import RetrievalDataset
from bench.inputs.base import Batch, Inputs, split_metrics
from bench.inputs.features import FeatureBatches, FeatureInputs
from bench.precision import Precision

if TYPE_CHECKING:
    from bench.inputs.frozen import FeatureCache


def create_inputs(ds: RetrievalDataset, cfg: TrialConfig, device: torch.device, precision: Precision,
                  feature_cache: "FeatureCache | None" = None) -> Inputs:
    """The input stage for ``ds`` under ``cfg``; ``feature_cache``: where frozen-backbone
    features are held in memory (default: the process's, :data:`bench.inputs.frozen.PROCESS_CACHE`)."""
    setup: dict[str, Any] = {}
    if ds.kind == "images" and cfg.model.freeze_backbone:
        from bench.inputs.frozen import frozen_features

        ds, setup = frozen_features(ds, cfg, device, feature_cache)
    if ds.kind == "features":
        inputs: Inputs = FeatureInputs(ds, cfg, device)
    else:
        from bench.inputs.images import ImageInputs

        inputs = ImageInputs(ds, cfg, device, precision)
    inputs.setup_info.update(setup)
    return inputs


__all__ = ["Batch", "FeatureBatches", "FeatureInputs", "Inputs", "create_inputs", "split_metrics"]
