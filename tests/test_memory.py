"""Memory stays bounded for huge images (reliability finding 1).

Before: detection ran at full resolution (about 1 GB per 36-megapixel image) and a batch
decoded 16 images at a time, so four 36-megapixel PNGs of a few hundred KB each took
several GB. Each case runs in a fresh process and reads that process's own peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image

from conftest import lfw_image

CHILD = """
import json, resource, sys
from facespace.pipeline import FacePipeline
pipeline = FacePipeline()
pipeline.embed_images([sys.argv[1]])  # networks loaded
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
results = pipeline.embed_images(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"extra_mib": peak - base, "faces": [len(r.faces) for r in results]}))
"""


def huge_photo(path, width=6928, height=5196):
    """36 megapixels of plain background with one real LFW face in it: a PNG of a few hundred KB."""
    canvas = Image.new("RGB", (width, height), (180, 170, 160))
    with Image.open(lfw_image("Aaron_Peirsol", 1)) as face:
        canvas.paste(face.convert("RGB").resize((1200, 1200)), (width // 2 - 600, height // 2 - 600))
    canvas.save(path, compress_level=1)
    return path


def peak_extra(images) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(lfw_image("Aaron_Peirsol", 2)), *map(str, images)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_huge_images_in_one_batch_stay_bounded(tmp_path):
    photo = huge_photo(tmp_path / "huge.png")
    assert photo.stat().st_size < 2_000_000
    result = peak_extra([photo] * 4)
    assert result["faces"] == [1, 1, 1, 1]
    # ~108 MB of pixels per decoded image; with the working size and pixel-bounded chunks the
    # peak is about two decoded images plus a small detection, not four images at full size.
    assert result["extra_mib"] < 800, result
