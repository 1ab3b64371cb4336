"""Every random stream of nasplat in one table: a run's seed plus a stream's tag gives each stream its own seed.

A stream is ``derive_seed(seed, TAG, index)``: the same run seed never feeds two streams, and adding a stream
means adding a row here, never reusing a number. Tags are part of the reproducibility contract (changing one
changes results), so rows are only ever added.
"""

from __future__ import annotations

import numpy as np

# supernet training (nasplat.train)
TRAIN_DATA = 0  # index: epoch -> shuffling and augmentation of that epoch
TRAIN_PATHS = 1  # index: worker rank -> the path sampler's Generator
TASK = 2  # the task's torch Generator (index: step * 1000 + rank while training; 0 for BN recalibration)
PROGRESS = 3  # which subnets the per-epoch progress evaluation measures
# stand-alone training of finalists (nasplat.finetune)
FINETUNE_INIT = 20  # index: trial number -> fresh weights of a from-scratch finalist
FINETUNE_DATA = 21  # index: finalist, then epoch
FINETUNE_STEP = 22  # index: step -> the task's torch Generator
# the combined estimator's anchors (nasplat.train.train_standalone, estimators/combined.py)
ANCHOR_INIT = 40  # index: anchor -> fresh weights of an anchor network
ANCHOR_DATA = 41  # index: anchor, then pass over the training split
ANCHOR_STEP = 42  # index: step -> the task's torch Generator
ANCHOR_PICK = 43  # which architectures of the reference sample are anchors
# search drivers (nasplat.search / nasplat.search._samplers)
SAMPLER = 30  # index: driver -> a sampler's seed, so resumed and parallel drivers do not replay proposals

TABLE: dict[str, int] = {name: value for name, value in globals().items() if name.isupper() and isinstance(value, int)}


def derive_seed(seed: int, tag: int, index: int = 0) -> int:
    """A 63-bit seed for stream ``tag`` number ``index`` of a run seeded with ``seed``."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, tag, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
