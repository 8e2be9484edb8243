"""The drug library over HTTP: facts in /v1/identify answers, typed facts, library routes.

Serves a copy of the session's random-weight sample artifact with a library built for it
from the sample manifest, through Starlette's TestClient.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rxvision.identify.identifier import Identifier
from rxvision.library.for_model import build_model_library
from rxvision.serve import ServeSettings, create_app

OLANZAPINE = "00093-5770-56"  # TEVA 5770, white round 10 mm
IRBESARTAN = "00093-8232-56"  # TEVA 7239, pink oval 14 mm
TEMAZEPAM = "67877-0147-01"  # schedule IV


@pytest.fixture(scope="module")
def library_model(
    tmp_path_factory: pytest.TempPathFactory, sample_artifact: Path, sample_dir: Path
) -> Path:
    model = tmp_path_factory.mktemp("models") / "sample"
    shutil.copytree(sample_artifact, model)
    build_model_library(sample_dir / "manifest.csv", model)
    return model


def _client(ident: Identifier, **settings: Any) -> TestClient:
    app = create_app(ServeSettings(max_wait_ms=1.0, **settings), identifier=ident)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(library_model: Path) -> Iterator[TestClient]:
    with _client(Identifier.load(library_model)) as c:
        yield c


@pytest.fixture(scope="module")
def plain_client(sample_artifact: Path) -> Iterator[TestClient]:
    with _client(Identifier.load(sample_artifact)) as c:
        yield c


def _photo(sample_dir: Path, label: str) -> dict[str, tuple[str, bytes, str]]:
    path = sample_dir / "images" / f"{label}.jpg"
    return {"image": (path.name, path.read_bytes(), "image/jpeg")}


def _error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == status and body["detail"] and "Traceback" not in resp.text
    if code:
        assert body["error"] == code, body
    return body


def test_identify_answers_carry_facts_and_lookalikes(client: TestClient, sample_dir: Path) -> None:
    resp = client.post("/v1/identify", files=_photo(sample_dir, TEMAZEPAM), data={"topk": "24"})
    assert resp.status_code == 200, resp.text
    result = resp.json()["result"]
    assert result["facts_source"] == "library" and result["typed"] is None
    by_label = {c["label"]: c for c in result["candidates"]}
    facts = by_label[TEMAZEPAM]["facts"]
    assert facts["is_controlled"] and facts["dea_schedule"] == "CIV"
    assert facts["dailymed_url"].endswith(TEMAZEPAM) and facts["drug"].lower().startswith(
        "temazepam"
    )
    assert all(len(c["lookalikes"]) == 3 and c["lookalikes"][0]["note"] for c in by_label.values())


def test_identify_without_a_library_says_so(plain_client: TestClient, sample_dir: Path) -> None:
    resp = plain_client.post("/v1/identify", files=_photo(sample_dir, OLANZAPINE))
    result = resp.json()["result"]
    assert result["facts_source"] == "card" and result["candidates"][0]["facts"] is None
    resp = plain_client.post(
        "/v1/identify", files=_photo(sample_dir, OLANZAPINE), data={"imprint": "TEVA 5770"}
    )
    assert "drug library" in _error(resp, 422)["detail"]
    assert plain_client.get("/v1/library").json()["available"] is False
    _error(plain_client.get("/v1/library/search", params={"imprint": "M"}), 404, "no_library")


def test_typed_facts_in_the_form(client: TestClient, sample_dir: Path) -> None:
    photo = _photo(sample_dir, OLANZAPINE)
    resp = client.post(
        "/v1/identify",
        files=photo,
        data={"imprint": "TEVA 7239", "color": "pink", "shape": "oval"},
    )
    result = resp.json()["result"]
    assert result["candidates"][0]["label"] == IRBESARTAN  # random weights: the typed facts
    assert result["typed"]["fields"] == {"imprint": "TEVA 7239", "color": "pink", "shape": "oval"}
    assert result["candidates"][0]["typed_match"]["likelihood"] == pytest.approx(1.0)
    resp = client.post("/v1/identify", files=photo, data={"imprint": "ZZZZZZ"})
    result = resp.json()["result"]
    assert result["abstain"] and result["message"] == "not sure" and result["typed"]["contradicted"]
    body = _error(client.post("/v1/identify", files=photo, data={"color": "plaid"}), 422)
    assert body["errors"][0]["loc"] == ["body", "color"]
    body = _error(client.post("/v1/identify", files=photo, data={"imprint": ["A", "B"]}), 422)
    assert "more than once" in body["detail"]
    batch = {"images": photo["image"]}
    body = _error(client.post("/v1/identify/batch", files=batch, data={"imprint": "M"}), 422)
    assert "describe one pill" in body["detail"]


def test_library_search(client: TestClient) -> None:
    info = client.get("/v1/library").json()
    assert info["available"] and info["labels"] == 24 and info["lookalikes"]
    resp = client.get(
        "/v1/library/search", params={"imprint": "5770 teva", "color": "white", "limit": 3}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["query"] == {"imprint": "5770 teva", "color": "white"}
    top = body["hits"][0]
    assert top["label"] == OLANZAPINE and top["score"] == 1.0 and len(body["hits"]) <= 3
    assert top["facts"]["rxcui"] == "314154" and top["explanation"]
    photo = client.get(top["photo_url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    hits = client.get("/v1/library/search", params={"shape": "capsule", "size": 16}).json()
    assert hits["hits"] and hits["hits"][0]["facts"]["shape"] == "CAPSULE"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({}, "nothing to search by"),
        ({"color": "plaid"}, "unknown colour"),
        ({"shape": "blob"}, "shape"),
        ({"imprint": "--"}, "no letters or digits"),
        ({"imprint": "M", "size": "abc"}, "size"),
        ({"imprint": "M", "size": "nan"}, "not a pill size"),
        ({"imprint": "M", "size": "99"}, "not a pill size"),
        ({"imprint": "M", "score": "9"}, "segments"),
        ({"imprint": "M", "limit": "0"}, "limit"),
        ({"imprint": "M", "limit": "101"}, "limit"),
        ({"imprint": "M" * 300}, "imprint"),
    ],
)
def test_malformed_searches_are_refused(
    client: TestClient, params: dict[str, str], says: str
) -> None:
    body = _error(client.get("/v1/library/search", params=params), 422)
    assert says in body["detail"]


def test_one_pill_by_ndc(client: TestClient) -> None:
    resp = client.get(f"/v1/library/pills/{TEMAZEPAM}")
    assert resp.status_code == 200, resp.text
    [ref] = resp.json()["references"]
    assert ref["facts"]["is_controlled"] and ref["photo_url"]
    assert ref["same_pill"] == [] and ref["same_pill_note"] == ""
    assert client.get(ref["photo_url"]).content[:2] == b"\xff\xd8"  # a JPEG
    body = _error(client.get("/v1/library/pills/99999-9999-99"), 404, "unknown_pill")
    assert "/tmp" not in body["detail"]  # no server paths in answers
    _error(client.get("/v1/library/photos/9999"), 404, "no_photo")
    _error(client.get("/v1/library/photos/abc"), 422)


def test_library_routes_need_the_api_key(library_model: Path) -> None:
    with _client(Identifier.load(library_model), api_key="s3cret") as c:
        _error(c.get("/v1/library/search", params={"imprint": "M"}), 401)
        ok = c.get("/v1/library/search", params={"imprint": "M"}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
