"""Hostile request bodies against a real served bundle (real Ray Serve, real HTTP on 127.0.0.1).

What the checker must turn into a 4xx naming the record, where there is one, instead of a 5xx or an invalid
response: JSON nested past Python's recursion limit, integers of thousands of digits (Python refuses to convert
past 4300), integers beyond a double's range, finite inputs that make the model's output NaN, strings with a lone
surrogate (which pandas cannot encode); for images, formats outside the documented list, images over the pixel
limit and Pillow's decompression-bomb error. Decoding images must not hold up the replica's event loop.
"""
import base64
import http.client
import io
import json
import struct
import threading
import time
import zlib

import numpy as np
import pytest

from jobs.spec import validate_spec
from tests.serving_fixtures import call, deploy_app, release_app, served_bundle, serve_instance  # noqa: F401
from tests.test_images import image_spec


@pytest.fixture(scope="module")
def tabular_app(served_bundle, serve_instance):
    served = deploy_app(served_bundle, "bodies", serve_instance, body_timeout_s=4)
    yield served
    release_app("bodies")


_TRAINED: dict = {}


@pytest.fixture(scope="module")
def image_bundle(ray_session, tmp_path_factory):
    """A one-epoch CNN on 16x16 greyscale images: its accuracy is beside the point, its input contract is not.
    Trained once per session (tests/test_serving_schemathesis.py serves it too)."""
    if "images" not in _TRAINED:
        from defects import generate

        from jobs.pipeline import run_train

        data = generate(tmp_path_factory.mktemp("parts-bodies"), per_class=12, size=24, seed=5)
        raw = image_spec(data, tmp_path_factory.mktemp("parts-bodies-run")).model_dump(mode="json")
        raw["train"]["epochs"] = 1
        _TRAINED["images"], _ = run_train(validate_spec(raw), progress=lambda *_: None)
    return _TRAINED["images"]


@pytest.fixture(scope="module")
def image_app(image_bundle, serve_instance):
    served = deploy_app(image_bundle, "bodyimg", serve_instance)
    yield served
    release_app("bodyimg")


def post(url: str, body: bytes, timeout: float = 60.0):
    return call(url, "POST", "/predict", body, {"Content-Type": "application/json"}, timeout=timeout)


def where(out: dict) -> list:
    return [(e.get("record"), e.get("field")) for e in out["errors"]]


# ---------------------------------------------------------------------------------------------- tables

TABULAR = [
    # (name, body, status, words in the detail, [(record, field)] of the errors)
    ("nested past the recursion limit", b'{"records": [{"rpm": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}", 400,
     ["nests", "levels deep"], [(None, None)]),
    ("an integer of 5000 digits", b'{"records": [{}, {"rpm": 1' + b"0" * 5000 + b"}]}", 422,
     ["beyond the range of a double"], [(1, "rpm")]),
    ("an integer beyond a double's range", b'{"records": [{"torque_nm": -1' + b"0" * 400 + b"}]}", 422,
     ["beyond the range of a double"], [(0, "torque_nm")]),
    ("a float literal beyond a double's range", b'{"records": [{"rpm": 1e400}]}', 422,
     ["beyond the range of a double"], [(0, "rpm")]),
    ("finite inputs that make the output NaN", b'{"records": [{"rpm": 1500}, {"rpm": 1e308, "torque_nm": -1e308}]}',
     422, ["not a finite number", "'rpm'"], [(1, None)]),
    ("a field name that is a lone surrogate", b'{"records": [{"\\ud800": 1}]}', 422, ["unknown field"],
     [(0, "\ud800")]),
    ("a category that is a lone surrogate", b'{"records": [{"machine_type": "L\\udc00"}]}', 422,
     ["lone surrogate"], [(0, "machine_type")]),
    # The same surrogate as bytes, unescaped: json.loads took it, and pandas failed on it (500 and a traceback).
    ("a category of surrogate bytes", b'{"records": [{"machine_type": "L\xed\xa0\x80"}]}', 400,
     ["not UTF-8 text"], [(None, None)]),
    # A key twice: json kept the last (the model saw 99999) where a proxy or a log may read the first.
    ("a field given twice in a record", b'{"records": [{"rpm": 1500, "torque_nm": 40, "rpm": 99999}]}', 400,
     ["'rpm' twice in one object", "send each field once"], [(None, None)]),
    ("records given twice", b'{"records": [{"rpm": 1500}], "records": [{"rpm": 9}]}', 400, ["'records' twice"],
     [(None, None)]),
]


@pytest.mark.parametrize("name,body,status,words,errors", TABULAR, ids=[t[0] for t in TABULAR])
def test_hostile_tabular_body_is_a_4xx_naming_the_record(tabular_app, name, body, status, words, errors):
    got, headers, out = post(tabular_app.url, body)
    assert got == status, out
    assert headers["content-type"] == "application/json"
    assert all(w in out["detail"] for w in words), out["detail"]
    assert where(out) == errors, out
    # the replica is unharmed
    assert post(tabular_app.url, b'{"records": [{"rpm": 1500}]}')[0] == 200


def test_a_browsers_form_post_is_refused_and_a_scripts_post_of_any_type_is_answered(tabular_app):
    """A web page on any site could post a form (or text, with fetch's no-cors) to a server on 127.0.0.1 with no
    question asked by the browser, and into its prediction log: each was answered 200. A browser says where a
    request came from (Origin); curl and scripts send no Origin and are answered whatever their Content-Type."""
    body = b'{"records": [{"rpm": 1500}]}'
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        got, _, out = call(tabular_app.url, "POST", "/predict", body,
                           {"Content-Type": kind, "Origin": "https://evil.example"})
        assert got == 415 and f"a browser's post of Content-Type {kind.split(';')[0]!r} is refused" in out["detail"], out
    assert call(tabular_app.url, "POST", "/predict", body, {"Origin": "https://evil.example"})[0] == 415
    # the server's own /docs page posts JSON from its origin; curl -d sends a form type without an Origin
    assert call(tabular_app.url, "POST", "/predict", body, {"Content-Type": "application/json",
                                                            "Origin": tabular_app.url.rsplit("/", 1)[0]})[0] == 200
    assert call(tabular_app.url, "POST", "/predict", body,
                {"Content-Type": "application/x-www-form-urlencoded"})[0] == 200
    # Node's fetch: Sec-Fetch-Mode and text/plain for a string body, no Origin: a script, answered
    assert call(tabular_app.url, "POST", "/predict", body, {"Content-Type": "text/plain;charset=UTF-8",
                                                            "Sec-Fetch-Mode": "cors"})[0] == 200
    assert call(tabular_app.url, "POST", "/predict", body, {"Content-Type": "text/plain",
                                                            "Sec-Fetch-Site": "cross-site"})[0] == 415


def _stalled(url: str, declared: int, sent: bytes) -> tuple[float, bytes]:
    """A POST /predict that declares `declared` body bytes, sends `sent` and stalls: (seconds to the answer, it)."""
    import socket
    import time
    from urllib.parse import urlparse
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=60) as s:
        start = time.monotonic()
        s.sendall(f"POST {u.path}/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {declared}\r\n\r\n".encode() + sent)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 200:
            piece = s.recv(65536)
            if not piece:
                break
            answer += piece
        return time.monotonic() - start, answer


def test_a_body_that_stalls_is_answered_408_and_frees_the_replica(tabular_app):
    """A client that stalls mid-body held one of the replica's request slots for as long as the connection lived
    (HAProxy's client timeout: an hour); a few hundred of them froze the app. Now the body must come whole within
    serve.body_timeout_s (4 s for this app) of the headers, or HAProxy's 10 s for one that fits its buffer."""
    took, answer = _stalled(tabular_app.url, 100, b'{"records"')
    assert answer.startswith(b"HTTP/1.1 408") and took < 30, (took, answer[:300])
    # Past HAProxy's buffer (16 KiB), the replica's own deadline answers, naming the setting.
    took, answer = _stalled(tabular_app.url, 2_000_000, b'{"records": [' + b" " * 300_000)
    assert answer.startswith(b"HTTP/1.1 408") and b"serve.body_timeout_s" in answer and took < 30, (took, answer)
    assert post(tabular_app.url, b'{"records": [{"rpm": 1500}]}')[0] == 200


def test_ignored_fields_never_reach_the_model():
    """Under unknown_fields: ignore, fields that are not features are dropped by the checker: pandas would pay for
    each as a column (200,000 in one record: over a second) and cannot encode a name with a lone surrogate. A
    category value with a lone surrogate is named; a surrogate pair is text and passes."""
    from serving.schema import RequestChecker, RequestError

    checker = RequestChecker({"features": [{"name": "rpm", "type": "number"},
                                           {"name": "kind", "type": "category", "categories": ["a"]}]},
                             max_records=10, max_body_bytes=2**20, unknown_fields="ignore")
    body = b'{"records": [{"note": "\\ud83d", "\\udfff": 1, "rpm": 2, "kind": "\\ud83d\\ude00"}]}'
    assert checker.parse(body) == [{"rpm": 2, "kind": "\U0001f600"}]
    with pytest.raises(RequestError) as caught:
        checker.parse(b'{"records": [{}, {"kind": "x\\udc00"}]}')
    assert caught.value.status == 422 and [(p.record, p.field) for p in caught.value.problems] == [(1, "kind")]
    # A name far longer than every feature is ignored without being kept in the misspelling cache (a new 4 MB
    # name a request filled it: 800 MB after 200 requests).
    assert checker.parse(json.dumps({"records": [{"q" * 100_000: 1, "rpm": 2}]}).encode()) == [{"rpm": 2}]
    assert not any(len(name) > 100 for name in checker._near)
    # A surrogate encoded as bytes, not escaped, and a UTF-16 body: json.loads of bytes took both (the first then
    # failed in pandas: 500, a traceback in the server's log); refused as the body that is not UTF-8 it is. A
    # UTF-8 byte-order mark is allowed.
    strict = RequestChecker({"features": [{"name": "kind", "type": "category", "categories": ["a"]}]},
                            max_records=10, max_body_bytes=2**20)
    for body in (b'{"records": [{"kind": "\xed\xa0\x80"}]}', '{"records": [{"kind": "a"}]}'.encode("utf-16")):
        with pytest.raises(RequestError) as caught:
            strict.parse(body)
        assert caught.value.status == 400 and "the body is not UTF-8 text" in caught.value.summary(), body
    assert strict.parse('{"records": [{"kind": "a"}]}'.encode("utf-8-sig")) == [{"kind": "a"}]
    # An unseen category or a kept field of over 1,000 characters, or a category code of over 30 digits: refused
    # (each was logged and counted whole: 365 MB of 7 MB strings took `trainyard monitor` to 1.5 GB). A known
    # category of any length is taken.
    long_known = "k" * 1500
    capped = RequestChecker({"features": [{"name": "kind", "type": "category", "categories": ["a", long_known]}]},
                            max_records=10, max_body_bytes=2**22, keep=["site"])
    for record, field, said in (({"kind": "x" * 1001}, "kind", "a category of 1,001 characters; at most 1,000"),
                                ({"kind": 10**30}, "kind", "a category of 31 digits"),
                                ({"kind": -10**30}, "kind", "a category of 31 digits"),
                                ({"kind": "a", "site": "s" * 5000}, "site", "a field kept for the prediction log "
                                                                            "of 5,000 characters")):
        with pytest.raises(RequestError) as caught:
            capped.parse(json.dumps({"records": [record]}).encode())
        assert caught.value.status == 422 and [(p.field, said in p.message) for p in caught.value.problems] == [
            (field, True)], caught.value.summary()
    assert capped.parse(json.dumps({"records": [{"kind": long_known}, {"kind": "x" * 1000, "site": 10**19},
                                                                {"kind": 89_000_000_000_000_000_001}]}
                                   ).encode())[0] == {"kind": long_known}


def test_a_tables_own_row_is_refused_saying_what_its_extra_fields_are_and_how_to_have_them_ignored():
    """A row sent as the table has it (an id, the label) got only "unknown field; the features are ..."; the README
    said such fields are ignored, which holds under serve.unknown_fields: ignore, not the default."""
    from serving.schema import RequestChecker, RequestError

    checker = RequestChecker({"features": [{"name": "rpm", "type": "number"}], "label": {"name": "failure"}},
                             max_records=10, max_body_bytes=2**20)
    with pytest.raises(RequestError) as caught:
        checker.parse(b'{"records": [{"id": "C1", "failure": 1, "rmp": 3}]}')
    said = {p.field: p.message for p in caught.value.problems}
    assert said["id"].endswith("(GET /schema); send features only, list it in serve.log.keep to accept it and keep "
                               "it in the prediction log, or serve with --set unknown_fields=ignore to have fields "
                               "that are not features ignored")
    # The label: not pointed at serve.log.keep, which refuses it.
    assert said["failure"].endswith("; it is the model's label: send features only (labels known later are joined "
                                    "to the logged predictions by trainyard monitor --labels), or serve with --set "
                                    "unknown_fields=ignore to have fields that are not features ignored")
    # A misspelt feature is not advised to be ignored: it would be imputed without a word.
    assert "did you mean 'rpm'?" in said["rmp"] and "unknown_fields" not in said["rmp"]
    # ... unless it reads as an id ('machine_id' was only asked "did you mean 'machine_type'?").
    machines = RequestChecker({"features": [{"name": "machine_type", "type": "category"}], "label": {"name": "y"}},
                              max_records=10, max_body_bytes=2**20)
    with pytest.raises(RequestError) as caught:
        machines.parse(b'{"records": [{"machine_id": "PM-007", "machine_type": "L"}]}')
    [problem] = caught.value.problems
    assert "did you mean 'machine_type'? " in problem.message and problem.message.endswith(
        "; if it is an id rather than a misspelling, send features only, list it in serve.log.keep to accept it and "
        "keep it in the prediction log, or serve with --set unknown_fields=ignore to have fields that are not "
        "features ignored")
    for name in ("Machine_Id", "Id", "machineID", "uuid"):           # any case
        with pytest.raises(RequestError) as caught:
            machines.parse(json.dumps({"records": [{name: "x", "machine_type": "L"}]}).encode())
        assert "unknown_fields=ignore" in caught.value.problems[0].message, name
    # A label whose name is like a feature's ('machine_failure', 'machine_type') is said as the label, not asked
    # "did you mean 'machine_type'?"; under unknown_fields: ignore it is ignored, not refused as a misspelling.
    labelled = {"features": [{"name": "machine_type", "type": "category"}, {"name": "rpm", "type": "number"}],
                "label": {"name": "machine_failure"}}
    with pytest.raises(RequestError) as caught:
        RequestChecker(labelled, max_records=10, max_body_bytes=2**20).parse(
            b'{"records": [{"machine_failure": 1, "rpm": 3}]}')
    [problem] = caught.value.problems
    assert "did you mean" not in problem.message and "; it is the model's label: send features only" in problem.message
    assert RequestChecker(labelled, max_records=10, max_body_bytes=2**20, unknown_fields="ignore").parse(
        b'{"records": [{"machine_failure": 1, "rpm": 3}]}') == [{"rpm": 3}]


def test_ignored_fields_do_not_hide_a_misspelt_feature():
    """Under unknown_fields: ignore (what a clinic_id's refusal advised), 'lenght_of_stay' was ignored too and the
    stay imputed, answered 200, where `Bundle.predict` refuses it. A name that reads as a misspelt feature the
    record lacks is refused; an id, the feature itself beside it, or junk far from every feature is still ignored."""
    from serving.schema import RequestChecker, RequestError

    checker = RequestChecker({"features": [{"name": "length_of_stay", "type": "number"},
                                           {"name": "clinic_type", "type": "category"}]},
                             max_records=10, max_body_bytes=2**20, unknown_fields="ignore")
    with pytest.raises(RequestError) as caught:
        checker.parse(b'{"records": [{"clinic_id": "C07", "lenght_of_stay": 14.6}]}')
    [problem] = caught.value.problems
    assert problem.field == "lenght_of_stay" and "did you mean 'length_of_stay'?" in problem.message
    assert problem.message.endswith("(fields that are not features are ignored here, but this one reads as a "
                                    "misspelt feature the record lacks, which would be imputed: fix its name)")
    assert checker.parse(b'{"records": [{"clinic_id": "C07", "length_of_stay": 3, "lenght_of_stay": 1, '
                         b'"note": "x"}]}') == [{"length_of_stay": 3}]
    # The rule `Bundle.predict` applies (case folded, a close match): 'reason' beside no 'region' is no misspelling.
    regions = RequestChecker({"features": [{"name": "region", "type": "category"}, {"name": "age", "type": "number"}]},
                             max_records=10, max_body_bytes=2**20, unknown_fields="ignore")
    assert regions.parse(b'{"records": [{"reason": "renewal", "stage": 2, "session": 1}]}') == [{}]
    with pytest.raises(RequestError, match="did you mean 'age'"):
        regions.parse(b'{"records": [{"Agee": 40}]}')


def test_non_finite_regression_outputs_name_the_record():
    """A regression's predictions (no probabilities) are checked the same way; the hint names the record's
    largest number."""
    from serving.schema import non_finite_outputs

    error = non_finite_outputs({"predictions": [1.5, float("inf"), float("nan")]},
                               [{"rpm": 1}, {"rpm": 3e300, "torque_nm": -1e301, "machine_type": "L"}, {}])
    assert error.status == 422 and [(p.record, p.field) for p in error.problems] == [(1, None), (2, None)]
    assert "'torque_nm' = -1e+301" in error.problems[0].message


# ---------------------------------------------------------------------------------------------- images

def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height greyscale pixels but carries almost no data: what a decompression bomb
    looks like to the decoder before it allocates the declared size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def encoded(image, fmt: str) -> str:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_hostile_images_are_a_4xx_naming_the_record(image_app):
    from PIL import Image

    ok = encoded(Image.new("L", (24, 24), 128), "PNG")
    records = [
        {"image": ok},
        {"image": base64.b64encode(png_header_only(20_000, 20_000)).decode()},   # Pillow's bomb error
        {"image": base64.b64encode(png_header_only(5000, 5000)).decode()},       # over this bundle's limit
        {"image": encoded(Image.new("L", (24, 24)), "PPM")},                     # a format the docs do not list
        {"image": [[10 ** 400] * 16] * 16},                                      # a pixel beyond a double
        {"image": encoded(Image.new("L", (24, 24), 9), "JPEG")},
        {"image": np.full((16, 16), 0.5).tolist()},                              # scaled to 0..1
    ]
    status, _, out = post(image_app.url, json.dumps({"records": records}).encode())
    assert status == 422, out
    assert where(out) == [(1, "image"), (2, "image"), (3, "image"), (4, "image"), (6, "image")], out
    messages = [e["message"] for e in out["errors"]]
    assert "decompression-bomb" in messages[0] and "pixels" in messages[0]
    assert "5000x5000" in messages[1] and "limit" in messages[1]
    assert "PNG" in messages[2] and "JPEG" in messages[2]
    assert "pixel" in messages[3]
    assert "0..1" in messages[4] and "multiply by 255" in messages[4]
    # Every listed format decodes.
    for fmt in ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"):
        status, _, out = post(image_app.url, json.dumps({"records": [{"image": encoded(
            Image.new("RGB", (30, 20), (10, 200, 30)), fmt)}]}).encode())
        assert status == 200, (fmt, out)


def test_decoding_images_leaves_the_event_loop_free(image_app):
    """A request whose images take a while to decode must not hold up the replica's other requests: a health
    check sent once the big body is on its way comes back while the images are still decoding."""
    from urllib.parse import urlparse

    from PIL import Image

    # 4096 x 4096 (16.8 Mpx: at the pixel limit), smooth, so it is small as PNG but slow to inflate and resize:
    # 48 of them take ~2.5 s to decode here on two threads (~0.1 s each).
    gradient = np.tile(np.arange(4096, dtype=np.uint32) % 256, (4096, 1)).astype(np.uint8)
    body = json.dumps({"records": [{"image": encoded(Image.fromarray(gradient), "PNG")}] * 48}).encode()
    url = urlparse(image_app.url)
    sent, result = threading.Event(), {}

    def slow():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
        try:
            conn.request("POST", url.path + "/predict", body, {"Content-Type": "application/json"})
            result["sent"] = time.perf_counter()
            sent.set()
            response = conn.getresponse()
            response.read()
            result["status"], result["done"] = response.status, time.perf_counter()
        finally:
            sent.set()
            conn.close()

    worker = threading.Thread(target=slow)
    worker.start()
    assert sent.wait(60)
    time.sleep(0.1)
    start = time.perf_counter()
    status = call(image_app.url, "GET", "/healthz")[0]
    health_s = time.perf_counter() - start
    still_decoding = worker.is_alive()
    worker.join()
    assert result["status"] == 200 and status == 200
    assert still_decoding, result
    assert health_s < (result["done"] - result["sent"]) / 3, (health_s, result)


@pytest.mark.parametrize("python_310", [False, True], ids=["asyncio.timeout", "wait_for (Python 3.10)"])
def test_a_body_is_read_within_its_limit_and_deadline(monkeypatch, python_310):
    """`read_body` on Starlette's own Request: a stalled body is a 408, a body past the limit a 413 even when its
    rest then stalls (it was answered 408, "send it at once"), both closing the connection; on Python 3.10, which
    has no asyncio.timeout (the package supports it: every /predict would have been a 500), the same."""
    import asyncio

    from starlette.requests import Request

    from serving.body import read_body
    from serving.schema import RequestError
    if python_310:
        monkeypatch.delattr(asyncio, "timeout")

    def request(*chunks: bytes, stall: bool):
        sent = list(chunks)

        async def receive():
            if sent:
                return {"type": "http.request", "body": sent.pop(0), "more_body": bool(sent) or stall}
            await asyncio.sleep(3600)               # a client that stopped sending
        return Request({"type": "http", "method": "POST", "path": "/predict", "headers": []}, receive)

    assert asyncio.run(read_body(request(b'{"rec', b'ords": []}', stall=False), 100, 5)) == b'{"records": []}'
    for chunks, status, said in (([b'{"records"'], 408, "did not arrive within 0.3 s of its headers (10 byte(s)"),
                                 ([b"x" * 150], 413, "")):
        with pytest.raises(RequestError) as caught:
            asyncio.run(read_body(request(*chunks, stall=True), 100, 0.3))
        assert caught.value.status == status and said in caught.value.summary(), caught.value.summary()
        assert caught.value.close_connection
    with pytest.raises(RequestError) as caught:             # past the limit, then the rest sent whole: drained
        asyncio.run(read_body(request(b"x" * 150, b"y" * 10, stall=False), 100, 5))
    assert caught.value.status == 413 and not caught.value.close_connection
