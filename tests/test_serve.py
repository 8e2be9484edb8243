"""HTTP service contracts: identification, micro-batching, limits and errors, metrics, CLI.

Every test serves the session's random-weight resnet18 (64 px) artifact over the sample's
24 labels, through Starlette's TestClient (the app's lifespan runs, nothing listens).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from rxvision.identify.identifier import Identifier, IdentifierError
from rxvision.serve import ServeSettings, create_app
from rxvision.serve.middleware import BodyLimitMiddleware

ERROR_KEYS = {"error", "detail", "status"}


@pytest.fixture(scope="module")
def identifier(sample_artifact: Path) -> Identifier:
    return Identifier.load(sample_artifact)


@pytest.fixture(scope="module")
def photos(sample_dir: Path) -> list[Path]:
    return sorted((sample_dir / "images").glob("*.jpg"))


@pytest.fixture
def make_client(identifier: Identifier) -> Iterator[Callable[..., TestClient]]:
    """``make_client(identifier=None, **settings)`` -> a started TestClient.

    Serves ``identifier`` (default: the module's), or loads ``settings["model"]`` if given.
    """
    clients: list[TestClient] = []

    def make(ident: Identifier | None = None, **settings: Any) -> TestClient:
        settings.setdefault("max_wait_ms", 1.0)
        if "model" not in settings:
            ident = ident or identifier
        app = create_app(ServeSettings(**settings), identifier=ident)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def _file(path: Path, field: str = "image") -> tuple[str, tuple[str, bytes, str]]:
    return field, (path.name, path.read_bytes(), "image/jpeg")


def _assert_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body.keys() >= ERROR_KEYS and body["status"] == status
    assert "Traceback" not in resp.text
    if code:
        assert body["error"] == code, body
    return body


class CountingForward:
    """Wraps ``Identifier.forward``: records the batch size of every call."""

    def __init__(self, ident: Identifier, gate: threading.Event | None = None):
        self.real, self.gate = ident.forward, gate
        self.sizes: list[int] = []
        self.entered = threading.Event()

    def __call__(self, batch: torch.Tensor) -> Any:
        self.sizes.append(len(batch))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        return self.real(batch)


# --- identification ------------------------------------------------------------------------
def test_identify_real_photo(client: TestClient, identifier: Identifier,
                             photos: list[Path]) -> None:
    resp = client.post("/v1/identify", files=[_file(photos[0])], data={"topk": "5"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "single" and body["backend"] == "torch"
    assert body["model"].startswith("sample@")
    result = body["result"]
    cands = result["candidates"]
    assert [c["rank"] for c in cands] == [1, 2, 3, 4, 5]
    probs = [c["probability"] for c in cands]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert {c["label"] for c in cands} <= set(identifier.labels)
    assert all(c["metadata"]["ndc"] for c in cands)
    assert result["message"] in {"ok", "not sure", "not a pill I know"}
    assert result["source"] == photos[0].name and result["explanations"] is None
    # Same answer as the library on the same photo.
    [expected] = identifier.identify(photos[0], topk=5)
    assert [c["label"] for c in cands] == [c.label for c in expected.candidates]
    assert probs == pytest.approx([c.probability for c in expected.candidates], abs=1e-5)
    t = body["timings_ms"]
    assert t["batch_size"] >= 1 and t["total_ms"] >= t["forward_ms"] > 0


def test_identify_pair_fuses_both_sides(client: TestClient, identifier: Identifier,
                                        photos: list[Path]) -> None:
    front, back = photos[1], photos[2]
    resp = client.post("/v1/identify", files=[_file(front, "front"), _file(back, "back")],
                       data={"topk": "3"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "pair" and body["timings_ms"]["batch_size"] == 2  # one pass
    expected = identifier.identify_pair(front, back, topk=3)
    got = body["result"]["candidates"]
    assert [c["label"] for c in got] == [c.label for c in expected.candidates]
    assert [c["probability"] for c in got] == pytest.approx(
        [c.probability for c in expected.candidates], abs=1e-5)
    assert body["result"]["source"] == f"{front.name} + {back.name}"


def test_batch_endpoint_one_result_per_image(client: TestClient, identifier: Identifier,
                                             photos: list[Path]) -> None:
    files = [_file(p, "images") for p in photos[:3]]
    resp = client.post("/v1/identify/batch", files=files, data={"topk": "2"})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    expected = identifier.identify(photos[:3], topk=2)
    assert [r["candidates"][0]["label"] for r in results] == [
        e.top.label for e in expected]
    assert [r["source"] for r in results] == [p.name for p in photos[:3]]
    assert resp.json()["timings_ms"]["batch_size"] == 3


@pytest.mark.parametrize("n", [1, 2])
def test_batch_of_one_or_two_photos_is_never_a_pair(client: TestClient, identifier: Identifier,
                                                    photos: list[Path], n: int) -> None:
    # Regression (issue 19): two files were taken for a front/back pair, then zip() failed: 500.
    files = [_file(p, "images") for p in photos[:n]]
    resp = client.post("/v1/identify/batch", files=files, data={"topk": "2"})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == n
    expected = identifier.identify(photos[:n], topk=2)
    assert [r["candidates"][0]["label"] for r in results] == [e.top.label for e in expected]
    assert [r["source"] for r in results] == [p.name for p in photos[:n]]


@pytest.mark.parametrize("field", ["image", "front", "topk", "explain"])
def test_repeated_field_is_422(client: TestClient, photos: list[Path], field: str) -> None:
    # Regression (issue 19): two `image` parts answered 200 for the last, ignoring the first.
    if field in ("image", "front"):
        resp = client.post("/v1/identify", files=[_file(photos[0], field),
                                                  _file(photos[1], field)])
    else:
        resp = client.post("/v1/identify", files=[_file(photos[0])],
                           data={field: ["1", "2"] if field == "topk" else ["true", "false"]})
    body = _assert_error(resp, 422)
    assert f"{field!r}" in body["detail"] and "more than once" in body["detail"]
    assert body["errors"] == [{"loc": ["body", field], "msg": "repeated field"}]


def test_batch_larger_than_max_batch_is_split(make_client: Callable[..., TestClient],
                                              sample_artifact: Path,
                                              photos: list[Path]) -> None:
    ident = Identifier.load(sample_artifact)
    counter = CountingForward(ident)
    ident.forward = counter  # type: ignore[method-assign]
    client = make_client(ident, max_batch=2)
    counter.sizes.clear()  # forget the warm-up pass
    resp = client.post("/v1/identify/batch", files=[_file(p, "images") for p in photos[:5]])
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["results"]) == 5
    assert sorted(counter.sizes) == [1, 2, 2]


def test_results_say_where_the_model_zoomed(client: TestClient, photos: list[Path],
                                            identifier: Identifier, tmp_path: Path) -> None:
    small = tmp_path / "small_pill.png"
    photo = Image.new("RGB", (1200, 900), (170, 165, 150))
    ImageDraw.Draw(photo).ellipse((560, 400, 680, 470), fill=(200, 60, 60))
    photo.save(small)
    _, zoom = identifier.prepare(small)
    expected = zoom.crop
    assert expected is not None  # the sample model's card says zoom: auto
    resp = client.post("/v1/identify", files=[_file(small)])
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"]["zoomed_to"] == [expected]
    assert resp.json()["result"]["zoom_notes"] == ["zoomed"]
    resp = client.post("/v1/identify", files=[_file(small, "front"), _file(photos[0], "back")])
    assert resp.json()["result"]["zoomed_to"] == [expected, None]  # a studio photo: whole
    _, studio = identifier.prepare(photos[0])
    assert studio.note and studio.note != "zoomed"
    assert resp.json()["result"]["zoom_notes"] == ["zoomed", studio.note]


def test_explain_returns_three_overlays(client: TestClient, photos: list[Path]) -> None:
    resp = client.post("/v1/identify", files=[_file(photos[0])], data={"explain": "true"})
    assert resp.status_code == 200, resp.text
    overlays = resp.json()["result"]["explanations"]["image"]
    assert set(overlays) == {"attention", "gradcam", "occlusion"}
    prefix = "data:image/png;base64,"
    for url in overlays.values():
        assert url.startswith(prefix)
        img = Image.open(io.BytesIO(base64.b64decode(url[len(prefix):])))
        assert img.size == (64, 64)  # drawn on the letterboxed input


def test_explain_refused_without_torch_model(make_client: Callable[..., TestClient],
                                             identifier: Identifier,
                                             photos: list[Path]) -> None:
    # An identifier without the torch model, as the onnx backend builds it.
    ident = Identifier(identifier.runner, identifier.labels, identifier.label_metadata,
                       identifier.preprocessing, identifier.card, backend="onnx",
                       path=identifier.path)
    client = make_client(ident, onnx_spinning=True)  # the runner is torch: nothing to tune
    assert client.get("/v1/model").json()["capabilities"]["explain"] is False
    resp = client.post("/v1/identify", files=[_file(photos[0])], data={"explain": "1"})
    _assert_error(resp, 422)
    assert "torch backend" in resp.json()["detail"]
    assert client.post("/v1/identify", files=[_file(photos[0])]).status_code == 200


def test_onnx_backend_serves_the_export(make_client: Callable[..., TestClient],
                                        sample_artifact: Path, sample_dir: Path,
                                        tmp_path: Path, photos: list[Path]) -> None:
    from rxvision.deploy.export import export_artifact

    export = tmp_path / "onnx"
    export_artifact(sample_artifact, export, parity_data=sample_dir / "manifest.csv",
                    num_parity=4)
    client = make_client(model=export, backend="onnx")
    resp = client.post("/v1/identify", files=[_file(photos[3])], data={"topk": "3"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["backend"] == "onnx"
    [expected] = Identifier.load(export, backend="onnx").identify(photos[3], topk=3)
    got = resp.json()["result"]["candidates"]
    assert [c["label"] for c in got] == [c.label for c in expected.candidates]
    assert [c["probability"] for c in got] == pytest.approx(
        [c.probability for c in expected.candidates], abs=1e-5)
    info = client.get("/v1/model").json()
    assert info["capabilities"]["explain"] is False and info["sha256"] == json.loads(
        (export / "card.json").read_text())["export"]["sha256"]
    # The served session does not busy-wait between passes (see service._stop_onnx_spinning).
    session = client.app.state.service.identifier.runner.model.session
    assert session.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning") == "0"
    assert info["tta"] == 1  # the card has no calibration.tta


def test_serve_takes_the_rotation_setting(make_client: Callable[..., TestClient],
                                          sample_artifact: Path, photos: list[Path]) -> None:
    client = make_client(model=sample_artifact, tta=4)
    assert client.get("/v1/model").json()["tta"] == 4
    resp = client.post("/v1/identify", files=[_file(photos[1])], data={"topk": "3"})
    assert resp.status_code == 200, resp.text
    [expected] = Identifier.load(sample_artifact, tta=4).identify(photos[1], topk=3)
    assert [c["probability"] for c in resp.json()["result"]["candidates"]] == pytest.approx(
        [c.probability for c in expected.candidates], abs=1e-5)
    with pytest.raises(ValueError, match="tta"):
        ServeSettings(tta=3)


# --- micro-batching ------------------------------------------------------------------------
def test_two_concurrent_requests_share_one_forward(make_client: Callable[..., TestClient],
                                                   sample_artifact: Path,
                                                   photos: list[Path]) -> None:
    ident = Identifier.load(sample_artifact)
    counter = CountingForward(ident)
    ident.forward = counter  # type: ignore[method-assign]
    # A long wait: the first request's batch stays open until the second one joins.
    client = make_client(ident, max_batch=2, max_wait_ms=5000)
    assert counter.sizes == [1]  # the warm-up pass
    counter.sizes.clear()
    responses: list[Any] = [None, None]

    def post(i: int) -> None:
        responses[i] = client.post("/v1/identify", files=[_file(photos[i])])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r is not None and r.status_code == 200 for r in responses)
    assert counter.sizes == [2], "two concurrent requests must share one forward pass"
    assert time.perf_counter() - start < 5.0  # the batch ran when full, not at the timeout
    for r in responses:
        assert r.json()["timings_ms"]["batch_size"] == 2
        assert r.json()["timings_ms"]["batch_requests"] == 2
    metrics = client.get("/metrics").text
    assert 'rxvision_batch_size_bucket{le="1.0"} 0.0' in metrics  # the warm-up is not counted
    assert 'rxvision_batch_size_bucket{le="2.0"} 1.0' in metrics


def test_full_queue_answers_503_with_retry_after(make_client: Callable[..., TestClient],
                                                 sample_artifact: Path,
                                                 photos: list[Path]) -> None:
    ident = Identifier.load(sample_artifact)
    gate = threading.Event()
    counter = CountingForward(ident, gate)
    ident.forward = counter  # type: ignore[method-assign]
    gate.set()  # let the warm-up through
    client = make_client(ident, max_batch=1, queue_size=1, max_wait_ms=0)
    gate.clear()
    counter.entered.clear()
    service = client.app.state.service
    results: dict[str, Any] = {}

    def post(name: str, photo: Path) -> None:
        results[name] = client.post("/v1/identify", files=[_file(photo)])

    first = threading.Thread(target=post, args=("first", photos[0]))
    first.start()
    assert counter.entered.wait(10)  # the first request holds the (gated) forward pass
    second = threading.Thread(target=post, args=("second", photos[1]))
    second.start()
    deadline = time.monotonic() + 10
    while service.batcher.depth < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.batcher.depth == 1  # the second one waits in the (full) queue
    third = client.post("/v1/identify", files=[_file(photos[2])])
    _assert_error(third, 503, "queue_full")
    assert third.headers["retry-after"] == "1"
    gate.set()
    first.join(30)
    second.join(30)
    assert results["first"].status_code == results["second"].status_code == 200
    assert "rxvision_queue_rejections_total 1.0" in client.get("/metrics").text


# --- limits and errors ---------------------------------------------------------------------
def test_body_over_limit_by_content_length(make_client: Callable[..., TestClient],
                                           photos: list[Path]) -> None:
    client = make_client(max_body_bytes=4096)
    body = _assert_error(client.post("/v1/identify", files=[_file(photos[0])]), 413,
                         "payload_too_large")
    assert "4,096" in body["detail"]


def test_body_over_limit_while_streaming(make_client: Callable[..., TestClient],
                                         photos: list[Path]) -> None:
    client = make_client(max_body_bytes=4096)
    boundary = "rxvisionboundary"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
               f"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    payload += photos[0].read_bytes() + f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:  # a generator: chunked, no Content-Length
        yield payload

    resp = client.post("/v1/identify", content=chunks(),
                       headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    _assert_error(resp, 413, "payload_too_large")


def test_body_limit_middleware_counts_chunks() -> None:
    """Raw ASGI: the limit trips mid-stream, the app sees a disconnect, the client a 413."""
    seen: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            seen.append(msg)
            if msg["type"] == "http.disconnect" or not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3
    sent: list[dict] = []

    async def receive() -> dict:
        return chunks.pop(0)

    async def send(msg: dict) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/v1/identify", "headers": []}
    asyncio.run(BodyLimitMiddleware(app, max_bytes=1000)(scope, receive, send))
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]
    assert sent[0]["status"] == 413 and len(sent) == 2
    assert json.loads(sent[1]["body"])["error"] == "payload_too_large"


def test_unsupported_content_types(client: TestClient, photos: list[Path]) -> None:
    _assert_error(client.post("/v1/identify", json={"image": "x"}), 415,
                  "unsupported_media_type")
    resp = client.post("/v1/identify", files=[("image", ("a.txt", b"hello", "text/plain"))])
    _assert_error(resp, 415)
    _assert_error(client.post("/v1/identify/batch", content=photos[0].read_bytes(),
                              headers={"content-type": "image/jpeg"}), 415)


@pytest.mark.parametrize("name,data,needle", [
    ("empty.jpg", b"", "empty file"),
    ("text.jpg", b"this is not an image at all", "not an image"),
    ("truncated.jpg", None, "truncated or corrupt"),
])
def test_bad_image_is_400(client: TestClient, photos: list[Path], name: str,
                          data: bytes | None, needle: str) -> None:
    if data is None:
        whole = photos[0].read_bytes()
        data = whole[: len(whole) // 3]
    resp = client.post("/v1/identify", files=[("image", (name, data, "image/jpeg"))])
    body = _assert_error(resp, 400, "invalid_image")
    assert needle in body["detail"] and name in body["detail"]


def test_bad_image_in_batch_names_the_file(client: TestClient, photos: list[Path]) -> None:
    files = [_file(photos[0], "images"), ("images", ("broken.png", b"\x89PNG", "image/png"))]
    body = _assert_error(client.post("/v1/identify/batch", files=files), 400)
    assert "images[1] (broken.png)" in body["detail"]


def test_image_over_pixel_limit_is_413(make_client: Callable[..., TestClient],
                                       photos: list[Path]) -> None:
    client = make_client(max_pixels=1000)
    body = _assert_error(client.post("/v1/identify", files=[_file(photos[0])]), 413,
                         "image_too_large")
    assert "exceeds the limit of 1,000" in body["detail"]


@pytest.mark.parametrize("fields,data,missing", [
    ([], {"topk": "3"}, "image"),
    (["front"], {}, "back"),
    (["back"], {}, "front"),
])
def test_missing_field_is_422(client: TestClient, photos: list[Path], fields: list[str],
                              data: dict[str, str], missing: str) -> None:
    files = [_file(photos[0], f) for f in fields] or [("other", ("x.jpg", b"x", "image/jpeg"))]
    body = _assert_error(client.post("/v1/identify", files=files, data=data), 422)
    assert body["errors"] == [{"loc": ["body", missing], "msg": "field required"}]


def test_invalid_options_are_422(client: TestClient, photos: list[Path]) -> None:
    for data in ({"topk": "0"}, {"topk": "many"}, {"topk": "51"}, {"explain": "maybe"}):
        body = _assert_error(client.post("/v1/identify", files=[_file(photos[0])], data=data),
                             422)
        assert body["errors"][0]["loc"][-1] in data
    both = [_file(photos[0]), _file(photos[1], "front"), _file(photos[2], "back")]
    _assert_error(client.post("/v1/identify", files=both), 400)  # 3 files: over max_files
    text = client.post("/v1/identify", data={"image": "not a file"},
                       files=[("other", ("x", b"", "image/jpeg"))])
    _assert_error(text, 422)
    _assert_error(client.post("/v1/identify/batch", files=[]), 415)  # no body at all


def test_api_key(make_client: Callable[..., TestClient], photos: list[Path],
                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXV_TEST_KEY", "s3cret")
    settings = ServeSettings.with_api_key_from_env("RXV_TEST_KEY")
    client = make_client(api_key=settings.api_key)
    _assert_error(client.post("/v1/identify", files=[_file(photos[0])]), 401, "unauthorized")
    _assert_error(client.get("/v1/model", headers={"X-API-Key": "wrong"}), 401)
    ok = client.post("/v1/identify", files=[_file(photos[0])], headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200
    # Probes, metrics and the page stay open: the page asks for the key itself.
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/").status_code == 200
    monkeypatch.setenv("RXV_TEST_KEY", "")
    assert ServeSettings.with_api_key_from_env("RXV_TEST_KEY").api_key is None


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    _assert_error(client.get("/nope"), 404, "not_found")
    _assert_error(client.get("/v1/identify"), 405, "method_not_allowed")


# --- model, probes, metrics, docs, page ----------------------------------------------------
def test_model_info_and_probes(client: TestClient, sample_artifact: Path) -> None:
    info = client.get("/v1/model").json()
    card = json.loads((sample_artifact / "card.json").read_text())
    assert info["num_labels"] == 24 and info["input_size"] == [64, 64]
    assert info["sha256"] == card["weights"]["sha256"]
    assert info["id"] == f"sample@{card['weights']['sha256'][:12]}"
    assert info["version"]["rxvision"] and info["version"]["card_format"] == card["format"]
    assert info["capabilities"]["explain"] is True
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_readyz_is_503_before_start(identifier: Identifier) -> None:
    client = TestClient(create_app(ServeSettings(), identifier=identifier))  # no lifespan
    _assert_error(client.get("/readyz"), 503, "not_ready")


def test_metrics_count_requests_by_status(client: TestClient, photos: list[Path]) -> None:
    client.post("/v1/identify", files=[_file(photos[0])])
    client.post("/v1/identify", files=[("image", ("e.jpg", b"", "image/jpeg"))])
    client.get("/no/such/path")
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for line in (
        'rxvision_http_requests_total{endpoint="/v1/identify",method="POST",status="200"} 1.0',
        'rxvision_http_requests_total{endpoint="/v1/identify",method="POST",status="400"} 1.0',
        'rxvision_http_requests_total{endpoint="other",method="GET",status="404"} 1.0',
        "rxvision_queue_depth 0.0",
    ):
        assert line in text, line
    assert 'rxvision_http_request_duration_seconds_count{endpoint="/v1/identify"} 2.0' in text
    assert "rxvision_batch_size_count 1.0" in text  # one request (the warm-up is not counted)
    assert 'rxvision_model_info{backend="torch",model="sample@' in text


def test_docs_and_openapi(client: TestClient) -> None:
    assert "swagger" in client.get("/docs").text.lower()
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/identify"]["post"]["requestBody"]["content"]
    assert set(body["multipart/form-data"]["schema"]["properties"]) >= {"image", "front",
                                                                         "back", "topk"}
    assert "/v1/identify/batch" in spec["paths"] and "/v1/model" in spec["paths"]


def test_web_page_is_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'capture="environment"' in page.text and 'accept="image/*"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


# --- command line --------------------------------------------------------------------------
def test_serve_command_builds_settings(sample_artifact: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from rxvision.cli import main
    from rxvision.serve import runtime

    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: captured.update(app=app, **kw))
    monkeypatch.setattr(runtime, "limit_malloc_arenas", lambda: captured.update(arenas=True))
    monkeypatch.setenv("MY_KEY", "k")
    rc = main(["serve", "--model", str(sample_artifact), "--port", "8123", "--max-batch", "4",
               "--max-wait-ms", "2", "--api-key-env", "MY_KEY", "--log-level", "warning"])
    assert rc == 0 and captured["port"] == 8123 and captured["host"] == "127.0.0.1"
    settings = captured["app"].state.settings
    assert settings.max_batch == 4 and settings.max_wait_ms == 2.0
    assert settings.model == sample_artifact and settings.api_key.get_secret_value() == "k"
    assert captured["arenas"] and settings.torch_threads is None  # torch backend: untouched


def test_malloc_arena_cap_respects_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from rxvision.serve.runtime import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the operator's setting wins


def test_serve_command_bad_model_is_a_clean_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from rxvision.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err


# --- the batcher on its own ----------------------------------------------------------------
def test_batcher_never_splits_a_job_and_survives_errors() -> None:
    from rxvision.serve.batcher import MicroBatcher

    sizes: list[int] = []

    def forward(x: np.ndarray) -> tuple[np.ndarray, None]:
        sizes.append(len(x))
        if (x < 0).any():
            raise RuntimeError("bad batch")
        return x.reshape(len(x), -1)[:, :2] * 1.0, None

    async def scenario() -> None:
        batcher = MicroBatcher(forward, max_batch=3, max_wait_ms=200)
        await batcher.start()
        jobs = [np.full((n, 3, 1, 1), float(i)) for i, n in enumerate((2, 2, 1))]
        results = await asyncio.gather(*(batcher.submit(x) for x in jobs))
        assert sizes == [2, 3]  # 2 + 2 would overflow: the second job opens the next pass
        for x, r in zip(jobs, results, strict=True):
            assert np.array_equal(r.outputs[0], x.reshape(len(x), -1)[:, :2])
            assert r.outputs[1] is None
        with pytest.raises(RuntimeError, match="bad batch"):
            await batcher.submit(-np.ones((1, 3, 1, 1)))
        ok = await batcher.submit(np.ones((1, 3, 1, 1)))  # the worker lived on
        assert ok.batch_size == 1 and ok.batch_jobs == 1
        await batcher.stop()
        assert not batcher.running

    asyncio.run(scenario())


def test_batcher_waits_for_company_only_when_idle() -> None:
    from rxvision.serve.batcher import MicroBatcher

    gate, sizes = threading.Event(), []

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, None]:
        sizes.append(len(x))
        assert gate.wait(10)
        return torch.zeros(len(x), 2), None

    async def scenario() -> float:
        batcher = MicroBatcher(forward, max_batch=4, max_wait_ms=3000)
        await batcher.start()
        one = torch.zeros(1, 3, 1, 1)
        first = [asyncio.ensure_future(batcher.submit(one)) for _ in range(4)]  # fills a pass
        while not sizes:
            await asyncio.sleep(0.005)
        later = [asyncio.ensure_future(batcher.submit(one)) for _ in range(2)]  # queued
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        gate.set()
        await asyncio.gather(*first, *later)
        await batcher.stop()
        return time.perf_counter() - start

    elapsed = asyncio.run(scenario())
    assert sizes == [4, 2]
    assert elapsed < 1.5  # the queued pair ran as soon as the model was free, no 3 s wait


def test_serve_reports_and_checks_the_head_precision(make_client: Callable[..., TestClient],
                                                     sample_artifact: Path) -> None:
    client = make_client(model=sample_artifact)
    assert client.get("/v1/model").json()["identification"]["head_precision"] == "fp32"
    with pytest.raises(IdentifierError, match="cosine final layer"):  # nn.Linear head
        make_client(model=sample_artifact, head_precision="fp16")
