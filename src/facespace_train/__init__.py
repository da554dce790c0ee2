"""Training FaceNet embedders with triplet loss (kept apart from the inference package).

Modules: :mod:`.losses` (triplet loss, online mining), :mod:`.sampler` (P x K
batches), :mod:`.data` (identity-folder datasets, augmentation), :mod:`.trainer`
(the loop, checkpoints, logs, LFW evaluation), :mod:`.distributed` (DDP with
global-batch mining), :mod:`.align_dataset` (pre-aligning a dataset) and
:mod:`.config` (the options). Run with ``facespace train --config FILE``.
"""

from .config import TrainConfig

__all__ = ["TrainConfig", "train"]


def train(cfg: TrainConfig) -> dict:
    """Train as ``cfg`` says (imports torch lazily); see :func:`facespace_train.trainer.train`."""
    from .trainer import train as _train

    return _train(cfg)
