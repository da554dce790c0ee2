"""Face crops in, L2-normalised embeddings out: batched, optionally flip-averaged.

torch is imported when a torch network is first used, not with this module, so the
CLI can read :data:`Backend` without paying for it; the ONNX Runtime backends run in
NumPy and never import it once their graph is cached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, get_args

import numpy as np

from .errors import OptionError, check_choice
from .pretrained.registry import PretrainedConfig, resolve_config

if TYPE_CHECKING:
    import torch

#: Runtimes for the embedding network: "torch" (any device), "onnx" (ONNX Runtime, float, the
#: same embeddings within 1e-4), "onnx-int8" (int8-quantised: ~3x faster on CPU, cosine ~0.998)
#: and "torch-bf16" (the network in bfloat16 on the CPU, runtime/fuse.py: ~2.3x faster than "torch"
#: where the CPU has AVX512-BF16 or AMX, cosine >= 0.999; benchmarks/results/bf16.json).
Backend = Literal["torch", "onnx", "onnx-int8", "torch-bf16"]
BACKENDS: tuple[str, ...] = get_args(Backend)
#: The label of torch-bf16 embeddings in a pipeline's preprocessing (galleries never mix them with
#: float ones, nor with earlier bf16 ones): bfloat16 convolutions and residual sums (fused into them,
#: runtime/fuse.py), float32 pooling, bottleneck and normalisation. Was "bf16:f32-residual" (autocast,
#: float32 residual sums: embeddings up to 6e-3 apart from these).
BF16_PRECISION = "bf16:bf16-residual,f32-head"
#: Backends run by ONNX Runtime on NumPy arrays (no torch once their graph is cached).
ORT_BACKENDS: tuple[str, ...] = ("onnx", "onnx-int8")


def default_backend(device: str = "cpu") -> Backend:
    """The float runtime used when none is named: ONNX Runtime on the CPU where it is installed
    (the same embeddings within 1e-4, faster, and no torch import on a cached start), else torch."""
    from .runtime.device import prefers_onnx_runtime

    return "onnx" if prefers_onnx_runtime(device) else "torch"


class EmbeddingModel(Protocol):
    """What the pipeline needs of an embedder: its contract and ``embed_crops``."""

    config: PretrainedConfig
    flip: bool
    backend: str
    device_name: str

    @property
    def name(self) -> str: ...

    @property
    def input_size(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def embed_crops(self, crops: np.ndarray, flip: bool | None = None) -> np.ndarray: ...


class Embedder:
    """A pretrained embedding network with its registered preprocessing.

    ``flip=True`` embeds each crop and its mirror image and averages the two
    (then renormalises): a cheap test-time augmentation.

    ``backend=None`` (the default) is :func:`default_backend`: ONNX Runtime on the CPU.
    Speed: the torch network is loaded with its batch norms folded into the
    convolutions (same outputs to ~1e-6) and, on CPU, run as oneDNN convolutions
    in channels-last layout with their ReLUs and residual sums fused
    (:func:`facespace.runtime.fuse.fuse_pointwise`, same outputs to ~1e-6).
    ``backend="onnx"`` runs the same network with ONNX Runtime instead
    (CPU only; exported into the weight cache on first use; needs the ``onnx``
    extra); ``backend="onnx-int8"`` runs its int8-quantised form
    (:mod:`facespace.runtime.quantize`); ``backend="torch-bf16"`` runs that fused torch network in
    bfloat16 (pooling, bottleneck and normalisation in float32; labelled ``precision=bf16:...``
    like int8). ``half`` runs the network in float16; the default is True on CUDA
    (embeddings then differ by ~1e-3 from float32) and False elsewhere.
    """

    def __init__(self, model: PretrainedConfig | str | None = None, device: str = "cpu", batch_size: int = 32,
                 flip: bool = False, backend: Backend | None = None, half: bool | None = None) -> None:
        from .runtime.device import device_name

        if backend is not None:
            check_choice(backend, Backend, "backend")
            if backend != "torch" and str(device).split(":")[0] != "cpu":
                raise OptionError(f"backend={backend!r} runs on the CPU; use backend='torch' for other devices")
        #: The checked device as a string ("cpu", "cuda:0"); :attr:`device` is its torch form.
        self.device_name = device_name(device)
        self.backend: Backend = default_backend(self.device_name) if backend is None else backend
        self.config: PretrainedConfig = resolve_config(model, "embedder")
        #: The network in bfloat16 (runtime/fuse.py), its head and output in float32.
        self.bf16 = backend == "torch-bf16"
        if not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.flip = flip
        self.half = bool(half) if half is not None else self.device_name.startswith("cuda")
        self._network = None

    @property
    def device(self) -> "torch.device":
        """The torch device (imports torch)."""
        import torch

        return torch.device(self.device_name)

    @property
    def network(self):
        """The network, loaded on first use so cached evaluations never pay for it."""
        if self._network is None:
            if self.backend not in ORT_BACKENDS:
                from .runtime.threads import apply_thread_default

                apply_thread_default()
            self._network = self._load()
        return self._network

    def _load(self):
        if self.backend == "onnx":
            from .runtime.onnx_backend import load_onnx_embedder

            return load_onnx_embedder(self.config)
        if self.backend == "onnx-int8":
            from .runtime.quantize import load_int8_embedder

            return load_int8_embedder(self.config)
        import torch

        from .pretrained.loader import load_embedder

        net = load_embedder(self.config, device=str(self.device), fuse=True)
        if self.device.type == "cpu" and not self.half:  # oneDNN convolutions, ReLUs and residual sums fused
            from .runtime.fuse import fuse_pointwise

            return fuse_pointwise(net, torch.bfloat16 if self.bf16 else torch.float32)
        if self.device.type == "cpu":
            net = net.to(memory_format=torch.channels_last)
        return net.half() if self.half else net

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def dim(self) -> int:
        return self.config.embedding_size

    def _forward(self, batch: "torch.Tensor") -> "torch.Tensor":
        import torch

        if self.backend not in ("torch", "torch-bf16"):
            return self.network(batch)
        batch = batch.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        if self.half:
            # float16 network, float32 L2 normalisation (a squared norm can overflow float16)
            raw = self.network(batch.half(), normalize=False).float()
            return torch.nn.functional.normalize(raw, p=2.0, dim=1, eps=1e-10)
        if self.bf16:  # bfloat16 network (fuse_pointwise), float32 L2 normalisation
            raw = self.network(batch, normalize=False)
            return torch.nn.functional.normalize(raw.float(), p=2.0, dim=1, eps=1e-10)
        return self.network(batch).float()

    def embed_crops(self, crops: np.ndarray, flip: bool | None = None) -> np.ndarray:
        """Embed (N, S, S, 3) uint8 RGB crops; returns (N, D) float32 unit vectors.

        ``flip`` overrides the embedder's own flip averaging for this call.
        """
        flip = self.flip if flip is None else flip
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = self.input_size
        if crops.shape[1:] != (size, size, 3):
            raise ValueError(f"crops must be (N, {size}, {size}, 3), got {crops.shape}")
        if self.backend in ORT_BACKENDS:
            return self._embed_arrays(crops, flip)
        import torch

        from .runtime.preprocess import normalise

        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = normalise(crops[start : start + self.batch_size], self.config.normalisation,
                                  channels_last=self.device.type == "cpu")
                embeddings = self._forward(batch)
                if flip:
                    embeddings = embeddings + self._forward(torch.flip(batch, dims=[3]))
                    embeddings = torch.nn.functional.normalize(embeddings, dim=1)
                out.append(embeddings.cpu().numpy())
        return np.concatenate(out)

    def _embed_arrays(self, crops: np.ndarray, flip: bool) -> np.ndarray:
        """:meth:`embed_crops` on an ONNX Runtime network, in NumPy from pixels to unit vectors."""
        from .runtime.preprocess import normalise_array

        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = normalise_array(crops[start : start + self.batch_size], self.config.normalisation)
            embeddings = self.network.run(batch)[0]
            if flip:
                embeddings = embeddings + self.network.run(batch[..., ::-1])[0]
                embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
            out.append(embeddings.astype(np.float32, copy=False))
        return np.concatenate(out)
