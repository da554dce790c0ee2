"""Face crops in, L2-normalised embeddings out: batched, optionally flip-averaged."""

from __future__ import annotations

import numpy as np
import torch

from .models import load_embedder
from .models.preprocess import normalise
from .registry import PretrainedConfig, get_config


class Embedder:
    """A pretrained embedding network with its registered preprocessing.

    ``flip=True`` embeds each crop and its mirror image and averages the two
    (then renormalises): a cheap test-time augmentation.
    """

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 32,
                 flip: bool = False) -> None:
        self.config: PretrainedConfig = get_config(model, "embedder")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.flip = flip
        self._network: torch.nn.Module | None = None

    @property
    def network(self) -> torch.nn.Module:
        """The network, loaded on first use so cached evaluations never pay for it."""
        if self._network is None:
            self._network = load_embedder(self.config.name, device=str(self.device))
        return self._network

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def dim(self) -> int:
        return self.config.embedding_size

    @torch.inference_mode()
    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Embed (N, S, S, 3) uint8 RGB crops; returns (N, D) float32 unit vectors."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = self.input_size
        if crops.shape[1:] != (size, size, 3):
            raise ValueError(f"crops must be (N, {size}, {size}, 3), got {crops.shape}")
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = normalise(crops[start : start + self.batch_size], self.config.normalisation)
            batch = batch.to(self.device)
            embeddings = self.network(batch)
            if self.flip:
                embeddings = embeddings + self.network(torch.flip(batch, dims=[3]))
                embeddings = torch.nn.functional.normalize(embeddings, dim=1)
            out.append(embeddings.float().cpu().numpy())
        return np.concatenate(out)
