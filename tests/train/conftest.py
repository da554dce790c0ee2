import cv2
import numpy as np
import pytest
import torch

from shared_data import DATA as SHARED


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_faces(tmp_path):
    """6 identities x 4 synthetic 48x48 images (each identity a colour pattern)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "faces"
    for ident in range(6):
        base = rng.integers(0, 255, size=(6, 6, 3)).astype(np.uint8)
        folder = root / f"id{ident:02d}"
        folder.mkdir(parents=True)
        for j in range(4):
            img = cv2.resize(base, (48, 48), interpolation=cv2.INTER_NEAREST).astype(np.int16)
            img = np.clip(img + rng.integers(-20, 20, size=img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{j}.png"), img)
    return root
