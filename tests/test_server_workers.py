"""Several server workers, one gallery, for real: ``facespace serve --workers 2`` on a loopback port
against a PostgreSQL gallery (tests/pg.py), under concurrent enrolments and identifications from a
bounded load (4 clients, 3 LFW people, each enrolled twice at once).

Nothing may be lost or stored twice, and a worker must find a person another worker enrolled (its
cached identifier follows the gallery's generation). Every answer names its worker
(``X-Facespace-Worker``), so the test knows which worker enrolled and which identified.
The larger measurement, with SQLite beside it (one writer at a time, one machine), is
``benchmarks/serve_workers.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shared_data import lfw_people
from test_server import running_server

httpx = pytest.importorskip("httpx")

PEOPLE = 3
CROSS_TRIES = 12  # fresh connections until another worker answers (the kernel picks the worker)


def enrol_then_identify(base: str, person: tuple[str, list[bytes], bytes]) -> dict:
    """Enrol ``person`` (one request), then identify their third photo until a worker other than the
    enrolling one answers; what each side said."""
    name, photos, probe = person
    files = [("images", (f"{name}_{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    enrolled = httpx.post(base + "/api/identities", data={"name": name}, files=files, timeout=120)
    worker = enrolled.headers["x-facespace-worker"]
    out = {"name": name, "status": enrolled.status_code, "enrolled": enrolled.json(), "worker": worker,
           "answers": []}
    for _ in range(CROSS_TRIES):
        with httpx.Client(base_url=base, timeout=120) as client:  # a new connection: maybe another worker
            found = client.post("/api/identify", files={"image": ("probe.jpg", probe, "image/jpeg")})
        assert found.status_code == 200, found.text
        out["answers"].append((found.headers["x-facespace-worker"], found.json()["faces"][0]["identity"]))
        if out["answers"][-1][0] != worker:
            break
    return out


@pytest.mark.parametrize("gallery_backend", ["postgresql"], indirect=True)
def test_workers_share_one_gallery_and_lose_or_double_nothing(gallery_backend, tmp_path):
    location = gallery_backend.location()
    people = lfw_people(PEOPLE)
    args = ["--gallery", location, "--workers", "2", "--inference-threads", "1"]
    with running_server(tmp_path, *args, log_level="warning") as (base, _, log_path):
        with ThreadPoolExecutor(4) as pool:  # every person sent by two clients at once
            results = list(pool.map(lambda p: enrol_then_identify(base, p), people + people))
        listed = httpx.get(base + "/api/identities", timeout=30).json()
    assert all(r["status"] == 201 for r in results), [r["enrolled"] for r in results]
    for name, _, _ in people:
        mine = [r["enrolled"] for r in results if r["name"] == name]
        assert sum(m["added"] for m in mine) == 2 and sum(m["duplicates"] for m in mine) == 2, mine
    assert {i["name"]: i["embeddings"] for i in listed["identities"]} == {name: 2 for name, _, _ in people}
    with gallery_backend.open(mode="read") as g:  # the store itself: nothing lost, nothing twice
        assert len(g.matrix()) == 2 * PEOPLE and g.integrity_check() == []
    workers = {r["worker"] for r in results} | {w for r in results for w, _ in r["answers"]}
    assert len(workers) == 2, f"the kernel sent everything to one worker: {workers}"
    crossed = [(r["name"], identity) for r in results for w, identity in r["answers"] if w != r["worker"]]
    assert crossed, "no identification was answered by another worker than the enrolling one"
    assert all(name == identity for name, identity in crossed), crossed  # the other worker's enrolment is seen
    assert all(identity == r["name"] for r in results for _, identity in r["answers"])
    assert "Traceback" not in log_path.read_text()
