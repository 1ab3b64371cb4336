"""Supernet training settings: the typed ``supernet.train`` section of a run file (pydantic only, no torch).

Kept in its own module so that reading and checking a run file imports no torch, and so that a
typo in ``supernet.train`` fails when the run file is read, naming the file and key, before any data loads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainSettings(BaseModel):
    """Hyper-parameters of supernet training (SGD or AdamW, linear warm-up then cosine decay, set per step)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0, description="applied to weights with 2+ dims, not to BN/bias")
    nesterov: bool = True
    optimizer: Literal["sgd", "adamw"] = Field(
        default="sgd", description="sgd (momentum, nesterov) or adamw (betas 0.9/0.999; momentum ignored)"
    )
    warmup_epochs: float = Field(default=0.0, ge=0)
    strategy: str = "uniform"
    strategy_options: dict[str, Any] = Field(default_factory=dict, description="options of the strategy")
    lr_scaling: Literal["linear", "none"] = Field(
        default="linear", description="linear: lr (set for one worker) times the number of workers"
    )
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description="bf16: autocast forward passes")
    progress_subnets: int = Field(
        default=0, ge=0, description="random subnets evaluated after each epoch (needs validation data)"
    )
    progress_images: int = Field(default=512, ge=1, description="validation images per progress evaluation")
    seed: int = 0
    augment: bool = Field(default=False, description="random crop + flip of training batches (32×32 colour)")
    grad_clip_norm: float | None = Field(default=None, gt=0)
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap steps per epoch (short CPU runs)")
    checkpoint_every_epochs: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        return self
