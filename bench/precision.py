"""A trial's numeric precision, decided once: autocast dtype, memory format, loss scaling.

nanoGPT's idiom: the trainer decides the precision at set-up and every piece that runs the
model (the training step, the input stage's evaluation and its device transform, the
frozen-feature extractor) reads it from here instead of deciding again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


class PrecisionError(ValueError):
    """A precision the device cannot run; the message names the setting."""


def resolve_amp(choice: str, device: torch.device, image_backbone: bool) -> torch.dtype | None:
    """``train.amp``: auto = bf16 for an image backbone on CUDA, else none (fp32)."""
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" and image_backbone else None
    if choice == "fp16" and device.type != "cuda":
        raise PrecisionError("train.amp=fp16 needs CUDA; use bf16 or none on the CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]


@dataclass(frozen=True)
class Precision:
    """``amp``: the autocast dtype (None = fp32 throughout); ``channels_last``: image
    batches and the model in channels_last. The loss always runs in fp32."""

    device: torch.device
    amp: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def decide(cls, train_cfg, device: torch.device, image_model: bool) -> "Precision":
        """From ``train.amp`` / ``train.channels_last`` (channels_last only for image models on CUDA)."""
        amp = resolve_amp(train_cfg.amp, device, image_model)
        return cls(device, amp, bool(image_model and device.type == "cuda" and train_cfg.channels_last))

    @property
    def label(self) -> str:
        """What the run records (``bench.precision``): ``fp32``, ``bf16 autocast``, ``fp16
        autocast + loss scaling``, with ``, channels_last`` when it applies."""
        text = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + loss scaling"}[self.amp]
        return text + (", channels_last" if self.channels_last else "")

    def autocast(self):
        """The context the model's forward runs in (a no-op for fp32)."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype of image batches handed to the model: the autocast dtype, else fp32."""
        return self.amp or torch.float32

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in the memory format its inputs come in."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model
