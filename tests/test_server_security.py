"""Which requests the server answers: Host and Origin checks, on a real server without an API key
(the case where they are the only defence against a web page the user visits)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from test_server import expect_error, jpg, running_server

httpx = pytest.importorskip("httpx")

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """No API key, a gallery, one extra host name and one extra origin allowed."""
    tmp = tmp_path_factory.mktemp("open-server")
    args = ["--gallery", str(tmp / "g.db"), "--allowed-hosts", "faces.test", "--allowed-origins",
            "http://trusted.example"]
    with running_server(tmp, *args, log_level="warning") as (base, _, _):
        with httpx.Client(base_url=base, timeout=120) as client:
            yield base, client


def _enrol(client, name: str, **headers):
    return client.post("/api/identities", data={"name": name}, files=[("images", jpg("Aaron_Peirsol", 1))],
                       headers=headers)


def _names(client) -> set[str]:
    return {i["name"] for i in client.get("/api/identities").json()["identities"]}


def test_other_sites_cannot_enrol_or_delete(open_server):
    base, client = open_server
    expect_error(_enrol(client, "From evil", Origin=EVIL), 403, "bad_origin")
    expect_error(_enrol(client, "From evil", Referer=EVIL + "/page.html"), 403, "bad_origin")
    expect_error(_enrol(client, "From nowhere", Origin="null"), 403, "bad_origin")  # sandboxed frames, file://
    expect_error(_enrol(client, "Other port", Origin="http://127.0.0.1:1"), 403, "bad_origin")
    assert _names(client) == set()  # nothing was enrolled by the refused requests
    assert _enrol(client, "Own page", Origin=base).status_code == 201
    assert _enrol(client, "Own page referer", Referer=base + "/?demo=verify").status_code == 201
    assert _enrol(client, "Trusted", Origin="http://trusted.example").status_code == 201
    assert _enrol(client, "Script").status_code == 201  # no Origin, no Referer: curl, httpx
    expect_error(client.delete("/api/identities/Script", headers={"Origin": EVIL}), 403, "bad_origin")
    assert _names(client) == {"Own page", "Own page referer", "Trusted", "Script"}
    assert client.get("/api/identities", headers={"Origin": EVIL}).status_code == 200  # a read changes nothing
    assert client.delete("/api/identities/Script", headers={"Origin": base}).status_code == 200


def test_unknown_hosts_are_refused(open_server):
    base, client = open_server
    port = urlsplit(base).port
    for host in ["evil.example", f"evil.example:{port}", f"localhost:{port + 1}", f"127.0.0.2:{port}"]:
        for path in ["/api/identities", "/", "/health"]:
            expect_error(client.get(path, headers={"Host": host}), 400, "bad_host")
        expect_error(_enrol(client, "Rebound", Host=host), 400, "bad_host")
    assert "Rebound" not in _names(client)
    for host in [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "faces.test", "faces.test:8443",
                 f"LocalHost:{port}"]:
        assert client.get("/health", headers={"Host": host}).status_code == 200, host


def test_security_settings():
    from starlette.datastructures import Headers

    from facespace.server import Security

    s = Security.for_server("::1", 8000, ["example.org:443"], ["https://app.example.org"])
    assert s.allowed_hosts == ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "example.org:443")
    assert s.host_allowed("example.org", "https") and not s.host_allowed("example.org", "http")
    assert s.origin_allowed("https://app.example.org:443/", "example.org", "https")
    assert not s.origin_allowed("http://app.example.org", "example.org", "https")
    assert Security(allowed_hosts=("*",)).host_allowed("anything.at.all:1")
    assert Security(allowed_origins=("*",)).origin_allowed("http://evil.example", "localhost:8000")
    assert Security().refusal("GET", Headers({}))[:2] == (400, "bad_host")  # no Host header at all
    assert Security().refusal("PUT", Headers({"host": "localhost:1", "origin": "http://localhost:1"})) is None
