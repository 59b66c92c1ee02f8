"""`python -m training serve` (training.serve) on a tiny real run, started in a subprocess on a free
port: answers equal to `predict --json` for the same photos (multipart and JSON, alone and under
concurrent load), and to `predict --json --source` for a request naming a source, whose rules follow
the label store within seconds (a copy of the run's workspace database); bad requests (malformed
bodies, unknown sources included) refused with a message while the server goes on, the API key, the
size limit, /health and /docs; and the command line's own refusals. Around
a fake model (tests/fake_serve.py): a queue longer than the timeout can serve gets 503, and a dead
model worker stops the server with one line."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import urllib3
from test_images import jpeg_bytes, patched_jpeg_size, png_of_zeros

import training.serve
from core import workspace
from core.access.database import DB_URL_ENV
from core.labels.store import LabelStore
from training.__main__ import main as cli
from training.acceptance import RULES_TTL
from training.checkpoints import load_predictor
from training.processes import group_alive, start_detached
from training.serve import LoadGauge

from conftest import REPO, SAMPLE_DIR, copy_database
from source_support import AUDITS_WRONG, HEAD, certified_source, fire_alarm

KEY_ENV, KEY = "FASHION_TAGGER_TEST_SERVE_KEY", "s3cret-key-for-tests"
EXPECTED_JSON = 'expected JSON {"image": "<base64>", "name": "<optional>", "source": "<optional>"}: '
MAX_BATCH, MAX_REQUEST_MB = 8, 1
PHOTOS = 8
# Float32 forward passes over batches of other sizes and neighbours than predict's: the same raw
# probabilities to the last bit or two (measured: at most 3.7e-7 apart on the CPU), which the
# trust layer's temperature (a division of log-probabilities) and joint decoding amplify a little
# (measured: up to 1.2e-6). Labels and accepted heads are compared exactly.
P_TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def run(in_tiny_run, tmp_path_factory):
    """The shared tiny run (record, demo, home) with its labels in a copy of its workspace database,
    which the tests write sources into; the module's environment (the server's too) points at both."""
    database = copy_database(in_tiny_run.home, tmp_path_factory.mktemp("labels"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DB_URL_ENV, f"sqlite:///{database}")
        yield in_tiny_run


@pytest.fixture(scope="module")
def photos(run) -> list[Path]:
    """Real catalogue photos when the sample is here, the demo's otherwise."""
    folder = SAMPLE_DIR / "images" if (SAMPLE_DIR / "images").is_dir() else run.demo / "images"
    return sorted(folder.glob("*.jpg"))[:PHOTOS]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """Files `predict` refuses, each for another reason."""
    folder = tmp_path_factory.mktemp("bad")
    contents = {"notes.md": b"not a photo", "empty.jpg": b"",
                "bomb.jpg": patched_jpeg_size(jpeg_bytes((64, 64)), 20_000, 10_000),  # 200 MP claimed: over any limit
                "cut.jpg": jpeg_bytes()[:400],
                "grey16.png": png_of_zeros(8_900, 8_900, 16)}  # 150 KB, 79 MP of 16 bits: 10 s and 1.5 GB to decode
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in contents}


@pytest.fixture(scope="module")
def starting_server(run, tmp_path_factory):
    """The server process, still loading its model; SIGTERM on teardown must end it and every process it started."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "server.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", **{workspace.HOME_ENV: str(run.home), KEY_ENV: KEY})
    command = [sys.executable, "-m", "training", "serve", run.record.id, "--port", str(port), "--device", "cpu",
               "--max-batch-size", str(MAX_BATCH), "--batch-timeout", "0.2", "--api-key-env", KEY_ENV,
               "--max-request-mb", str(MAX_REQUEST_MB)]
    process = start_detached(command, log, env, append=False)  # its own process group: what it starts is findable
    yield SimpleNamespace(process=process, url=f"http://127.0.0.1:{port}", log=log)
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = group_alive(process.pid)
    if left:
        os.killpg(process.pid, signal.SIGKILL)
    assert not left, f"processes of the server still running 60 s after SIGTERM:\n{log.read_text()[-3000:]}"
    assert process.wait(timeout=10) == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def cli_answers(run, photos, bad_files) -> dict[str, dict]:
    """`predict --json` for the photos and the bad files, by file name (computed while the server starts)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", **{workspace.HOME_ENV: str(run.home)})
    done = subprocess.run([sys.executable, "-m", "training", "predict", run.record.id, *map(str, photos),
                           *map(str, bad_files.values()), "--json", "--device", "cpu"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    return {Path(answer["path"]).name: answer for answer in answers}


@pytest.fixture(scope="module")
def server(starting_server, cli_answers):
    """The server, once /health says its model is loaded."""
    deadline = time.monotonic() + 300
    while True:
        assert starting_server.process.poll() is None, starting_server.log.read_text()
        try:
            if requests.get(f"{starting_server.url}/health", timeout=5).status_code == 200:
                return starting_server
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"not ready after 300 s:\n{starting_server.log.read_text()}"
        time.sleep(0.5)


def post(server, *, key: str | None = KEY, headers: dict | None = None, **kwargs) -> requests.Response:
    headers = {**(headers or {}), **({"X-API-Key": key} if key is not None else {})}
    return requests.post(f"{server.url}/predict", headers=headers, timeout=120, **kwargs)


def multipart(path: Path, name: str | None = None, source: str | None = None) -> dict:
    return {"files": {"file": (path.name if name is None else name, path.read_bytes(), "application/octet-stream")},
            **({"data": {"source": source}} if source is not None else {})}


def as_json(data: bytes, name: str | None, source: str | None = None) -> dict:
    return {"json": {"image": base64.b64encode(data).decode(), **({"name": name} if name is not None else {}),
                     **({"source": source} if source is not None else {})}}


def assert_same(answer, expected, where: str = "") -> None:
    """Equal JSON values, floats within P_TOLERANCE (every key, so fields predict gains are compared too)."""
    if isinstance(expected, float):
        assert answer == pytest.approx(expected, abs=P_TOLERANCE), where
    elif isinstance(expected, dict):
        assert isinstance(answer, dict) and list(answer) == list(expected), where
        for key in expected:
            assert_same(answer[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(answer, list) and len(answer) == len(expected), where
        for index, (got, want) in enumerate(zip(answer, expected)):
            assert_same(got, want, f"{where}[{index}]")
    else:
        assert answer == expected, where


def expected_for(cli_answers, path: Path) -> dict:
    """`predict --json`'s line for `path`, named as the server names an upload: by its file name."""
    return {**cli_answers[path.name], "path": path.name}


# The tests of the running server are all slow: whichever runs first waits ~20 s for it to start
# and for predict --json to answer the same photos.
@pytest.mark.slow
def test_a_photo_as_upload_or_json_gets_the_line_predict_json_prints(server, photos, cli_answers):
    for path in photos:
        expected = expected_for(cli_answers, path)
        assert "predictions" in expected, expected
        # The shared run has a typicality gate: its verdict, and the note where it refuses, come along.
        assert isinstance(expected["typical"], bool) and ("note" in expected) == (not expected["typical"])
        for body in (multipart(path), as_json(path.read_bytes(), path.name)):
            response = post(server, **body)
            assert response.status_code == 200, response.text
            assert 1 <= int(response.headers["X-Batch-Size"]) <= MAX_BATCH
            assert_same(response.json(), expected, path.name)


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_answered_alike(server, photos, cli_answers):
    order = [photos[index % len(photos)] for index in range(4 * MAX_BATCH)]
    with ThreadPoolExecutor(2 * MAX_BATCH) as pool:
        responses = list(pool.map(lambda path: post(server, **multipart(path)), order))
    for path, response in zip(order, responses):
        assert response.status_code == 200, response.text
        assert_same(response.json(), expected_for(cli_answers, path), path.name)
    sizes = [int(response.headers["X-Batch-Size"]) for response in responses]
    assert all(1 <= size <= MAX_BATCH for size in sizes) and max(sizes) > 1, sizes


@pytest.mark.slow
def test_a_refused_photo_gets_422_with_the_message_predict_gives(server, bad_files, cli_answers):
    for name, path in bad_files.items():
        expected = cli_answers[name]["error"].replace(str(path), name)
        for body in (multipart(path), as_json(path.read_bytes(), name)):
            response = post(server, **body)
            assert (response.status_code, response.json()) == (422, {"detail": expected}), name
    assert "megapixel limit" in cli_answers["bomb.jpg"]["error"]
    assert "megapixel limit for images of more than 8 bits per sample" in cli_answers["grey16.png"]["error"]


@pytest.mark.slow
def test_bad_requests_in_a_batch_leave_the_good_ones_answered(server, photos, bad_files, cli_answers):
    requests_ = [(path, multipart(path)) for path in photos] + [(None, multipart(bad_files["notes.md"])),
                                                                 (None, {"json": {"image": "%%%"}})] * 4
    with ThreadPoolExecutor(len(requests_)) as pool:
        responses = list(pool.map(lambda item: post(server, **item[1]), requests_))
    for (path, _), response in zip(requests_, responses):
        if path is None:
            assert response.status_code == 422, response.text
        else:
            assert response.status_code == 200, response.text
            assert_same(response.json(), expected_for(cli_answers, path), path.name)


@pytest.mark.slow
@pytest.mark.parametrize("body, status, detail", [
    ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "the body is not JSON ("),
    ({}, 400, "the body is not JSON ("),  # an empty POST, what /docs sends without a form
    ({"json": [1, 2]}, 422, EXPECTED_JSON + "body: Input should be a valid dictionary"),
    ({"json": {"name": "a.jpg"}}, 422, EXPECTED_JSON + "image: Field required"),
    ({"json": {"image": "aGVsbG8", "name": "a.jpg"}}, 422, "image: not valid base64 ("),
    ({"files": {"photo": ("a.jpg", b"x")}}, 422, "no photo: send it as a file in the multipart form field 'file'"),
    ({"data": {"file": "just text"}}, 422, "no photo: send it as a file in the multipart form field 'file'"),
    ({"files": {"file": ("big.jpg", b"x" * (MAX_REQUEST_MB * 2**20))}}, 413,
     f"the request is 1.0 MB, more than this server's {MAX_REQUEST_MB} MB limit"),
    ({"data": iter([b"x" * 2**20, b"x" * 2**20]), "headers": {"Content-Type": "application/json"}}, 413,
     "Payload too large"),  # sent in chunks, without a length: LitServe's own limit
    ({"data": iter([b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n', b"x" * 2**20,
                    b"x" * 2**20]), "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
     413, "Payload too large"),
    ({"data": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}}, 400,
     "the multipart form cannot be read (Missing boundary in multipart.); send the photo as a file in the "
     "multipart form field 'file', or JSON"),
    ({"data": b"no boundary here", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 400,
     "the multipart form cannot be read (Invalid multipart data.)"),
    ({"data": b"--x\r\nbroken header\r\n\r\nxx\r\n--x--\r\n", "headers": {
        "Content-Type": "multipart/form-data; boundary=x"}}, 400, "the multipart form cannot be read ("),
    ({"data": {f"field{index}": "x" for index in range(1_001)}, "files": {"file": ("a.jpg", b"x")}}, 400,
     "the multipart form cannot be read (Too many fields. Maximum number of fields is 1000.)"),
    ({"data": "file=x", "headers": {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}}, 422,
     "no photo: send it as a file in the multipart form field 'file'"),
    ({"data": "[" * 100_000 + "]" * 100_000, "headers": {"Content-Type": "application/json"}}, 400,
     "the body is JSON nested too deeply to read; send the photo as a file"),  # json.loads: RecursionError
    ({"data": '{"image": ' + "[" * 900 + "]" * 900 + "}", "headers": {"Content-Type": "application/json"}}, 422,
     EXPECTED_JSON + "image: Input should be a valid string"),
    ({"json": {"image": "eA==", "source": 5}}, 422, EXPECTED_JSON + "source: Input should be a valid string"),
    ({"json": {"image": "eA==", "source": " "}}, 422, "source: a source needs a name, got ' '"),
    ({"files": {"file": ("a.jpg", b"x")}, "data": {"source": "x" * 101}}, 422,
     "source: a source's name has at most 100 characters, got 101"),
    ({"files": {"file": ("a.jpg", b"x"), "source": ("s.txt", b"lookbook")}}, 422,
     "source: a text field naming the source, not a file"),
    ({"files": {"file": ("a.jpg", b"x")}, "data": {"source": "no-such-source"}}, 422,
     "source: unknown source 'no-such-source': the label store has no photo of it in the dataset 'demo'; its "
     "sources: "),
    ({"json": {"image": "eA==", "source": "no-such-source"}}, 422, "source: unknown source 'no-such-source'"),
], ids=["not-json", "empty", "a-list", "no-image", "bad-base64", "no-file-field", "text-field", "over-limit",
        "chunked-json", "chunked-form", "no-boundary", "other-boundary", "broken-part", "1001-fields",
        "urlencoded-charset", "deep-json", "deep-in-object", "source-not-text", "source-blank", "source-too-long",
        "source-a-file", "source-unknown", "source-unknown-json"])
def test_a_bad_request_is_refused_with_what_is_wrong_and_the_server_goes_on(server, photos, body, status, detail):
    response = post(server, **body)
    assert response.status_code == status and response.json()["detail"].startswith(detail), response.text
    assert post(server, **multipart(photos[0])).status_code == 200


@pytest.mark.slow
def test_a_request_naming_a_source_gets_its_rules_and_its_fired_alarm_stops_them_within_seconds(
        server, run, photos, tmp_path, capsys):
    """A source certified on its own reviewed photos: a request naming it (form field or JSON key) gets
    the line `predict --json --source` prints, its heads accepted under the source's rules; once the
    source's audits fire its alarm, the server stops accepting the head within RULES_TTL seconds."""
    store = LabelStore(workspace=run.home)  # the module's copy of the database, as the server's
    items = certified_source(store, run.demo, tmp_path / "lookbook", run.record.id,
                             load_predictor(run.record.folder).trust)
    assert cli(["predict", run.record.id, *map(str, photos), "--json", "--source", "lookbook", "--device", "cpu"]) == 0
    lines = {Path(line["path"]).name: line for line in map(json.loads, capsys.readouterr().out.splitlines())}
    assert all(line["source"] == "lookbook" and line["rules"][HEAD]["why"] == "certified on this source's reviewed "
               "photos" for line in lines.values())
    loaded = time.monotonic()  # the server knows a new source once its list of sources is read again
    while post(server, **multipart(photos[0], source="lookbook")).status_code == 422:
        assert time.monotonic() - loaded < RULES_TTL + 10, "the server never learned of the new source"
        time.sleep(0.5)
    for path in photos:
        expected = {**lines[path.name], "path": path.name}
        for body in (multipart(path, source="lookbook"), as_json(path.read_bytes(), path.name, "lookbook")):
            response = post(server, **body)
            assert response.status_code == 200, response.text
            assert_same(response.json(), expected, path.name)
    accepted = [path for path in photos if lines[path.name]["accepted"][HEAD] is not None]
    assert accepted and all(lines[path.name]["accepted"] != expected_for_no_source(server, path) for path in accepted)

    fire_alarm(store, items, run.record.id)
    fired = time.monotonic()
    while (answer := post(server, **multipart(accepted[0], source="lookbook")).json())["accepted"][HEAD] is not None:
        assert time.monotonic() - fired < RULES_TTL + 10, "the fired alarm did not stop the head"
        time.sleep(0.5)
    assert answer["rules"][HEAD] == {"threshold": None, "gated": True, "why": (
        f"stopped: {AUDITS_WRONG} of {AUDITS_WRONG} audited tags were wrong, above the 2% promised; an admin "
        "recalibrates it")}


def expected_for_no_source(server, path: Path) -> dict:
    """The server's accepted heads for `path` without a source: the run's rule."""
    answer = post(server, **multipart(path)).json()
    assert answer["source"] is None
    return answer["accepted"]


def test_a_request_naming_no_source_gets_the_servers_and_an_unknown_one_is_refused_in_its_batch(run, photos,
                                                                                             tmp_path):
    """The model's side of the server in this process: --source is the default of the requests that name
    none; a request naming a source the store does not know gets 422, the rest of its batch is answered."""
    store = LabelStore(workspace=run.home)
    certified_source(store, run.demo, tmp_path / "atelier", run.record.id, load_predictor(run.record.folder).trust)
    api = training.serve.TaggerAPI(training.serve.ServeSettings(run.record.id, run.record.folder, device="cpu",
                                                                source="atelier"))
    api.setup("cpu")
    upload = training.serve.Upload(photos[0].name, photos[0].read_bytes())
    requests_ = [training.serve.Photo(upload), training.serve.Photo(upload, "no-such-source"),
                 training.serve.Photo(upload, "atelier"), training.serve.Refusal(422, "no photo")]
    default, unknown, named, refused = api.predict(requests_, [{} for _ in requests_])
    assert default.source == "atelier" and default.as_json() == named.as_json()
    assert default.rules[HEAD].why == "certified on this source's reviewed photos" and default.accepted[HEAD]
    assert unknown.status == 422 and unknown.detail.startswith("source: unknown source 'no-such-source'")
    assert refused == requests_[3]


@pytest.mark.slow
def test_the_media_type_is_matched_whatever_its_case(server, photos, cli_answers):
    body, content_type = urllib3.encode_multipart_formdata({"file": (photos[0].name, photos[0].read_bytes())})
    for media_type in ("Multipart/Form-Data", "MULTIPART/FORM-DATA"):
        response = post(server, data=body, headers={"Content-Type": content_type.replace("multipart/form-data",
                                                                                          media_type)})
        assert response.status_code == 200, response.text
        assert_same(response.json(), expected_for(cli_answers, photos[0]), media_type)
    response = post(server, json={"image": base64.b64encode(photos[0].read_bytes()).decode()},
                    headers={"Content-Type": "Application/JSON"})
    assert response.status_code == 200, response.text


@pytest.mark.slow
def test_a_requests_name_is_only_a_name_never_a_path(server, photos, bad_files):
    """A name that is a path to a real photo still names the bytes sent (not an image here)."""
    response = post(server, **as_json(b"not a photo", str(photos[0])))
    assert response.status_code == 422
    assert response.json() == {"detail": f"{photos[0].name}: not an image, or a format that cannot be read "
                                         "(accepted: JPEG, PNG, WEBP, AVIF)"}
    for name, shown in (("../../etc/passwd", "passwd"), ("C:\\photos\\new\x00.jpg", "new.jpg"), ("", "upload")):
        for body in (multipart(photos[1], name=name), as_json(photos[1].read_bytes(), name)):
            response = post(server, **body)
            assert response.status_code == 200 and response.json()["path"] == shown, (name, response.text)
    assert post(server, json={"image": base64.b64encode(photos[1].read_bytes()).decode()}).json()["path"] == "upload"


@pytest.mark.slow
def test_without_the_api_key_only_health_answers(server, photos):
    assert post(server, key=None, **multipart(photos[0])).status_code == 401
    wrong = post(server, key="not-the-key", **multipart(photos[0]))
    assert (wrong.status_code, wrong.json()) == (403, {"detail": "wrong API key (X-API-Key)"})
    refused = post(server, key=None, data=b"{not json")  # the key is checked before the body is read
    assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
    assert requests.get(f"{server.url}/info", timeout=30).status_code == 401
    health = requests.get(f"{server.url}/health", timeout=30)
    assert (health.status_code, health.text) == (200, "ok")
    info = requests.get(f"{server.url}/info", headers={"X-API-Key": KEY}, timeout=30).json()
    assert info["model"]["checkpoint"] == "best.ckpt" and info["model"]["top_k"] == 3


@pytest.mark.slow
def test_docs_offer_a_file_upload_and_a_json_body(server):
    page = requests.get(f"{server.url}/docs", timeout=30).text
    assert "swagger" in page.lower() and "cdn" not in page  # offline too: the server hands out Swagger UI itself
    assert requests.get(f"{server.url}/docs-assets/swagger-ui-bundle.js", timeout=30).status_code == 200
    spec = requests.get(f"{server.url}/openapi.json", timeout=30).json()
    operation = spec["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert content["multipart/form-data"]["schema"]["properties"]["source"]["type"] == "string"
    assert content["application/json"]["schema"]["required"] == ["image"]
    assert "source" in content["application/json"]["schema"]["properties"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/TagsJSON")
    assert {"401", "403", "413", "422"} <= set(operation["responses"])
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


@pytest.fixture
def in_workspace(run, monkeypatch):
    """The command line, called in-process, sees the run's workspace; a server it would start fails the test."""
    monkeypatch.setenv(workspace.HOME_ENV, str(run.home))

    def no_server(settings):
        raise AssertionError(f"the server would have started with {settings}")

    monkeypatch.setattr(training.serve, "build_server", no_server)


@pytest.mark.parametrize("options, message", [
    (["--top-k", "0"], "--top-k must be at least 1, got 0"),
    (["--max-batch-size", "0"], "--max-batch-size must be at least 1, got 0"),
    (["--target-error", "0"], "the target error must be a rate between 0 and 1 (0.02 = 2 %), got 0.0"),
    (["--target-error", "1.5"], "the target error must be a rate between 0 and 1 (0.02 = 2 %), got 1.5"),
    (["--batch-timeout", "0"], "--batch-timeout must be more than 0 seconds, got 0.0"),
    (["--max-request-mb", "0"], "--max-request-mb must be more than 0, got 0.0"),
    (["--timeout", "0.005"], "--timeout must be more than --batch-timeout (0.01 s), got 0.005"),
    (["--timeout", "0.2", "--batch-timeout", "0.5"], "--timeout must be more than --batch-timeout (0.5 s), got 0.2"),
    (["--host", "10.1.2.3"], "--host must be one of 127.0.0.1, 0.0.0.0, ::, got '10.1.2.3'"),
    (["--port", "80"], "--port must be from 1024 to 65535, got 80"),
    (["--device", "gpu"], "device must be one of auto, cpu, cuda, got 'gpu'"),
    (["--api-key-env", "FASHION_TAGGER_NO_SUCH_VARIABLE"],
     "--api-key-env: the environment variable FASHION_TAGGER_NO_SUCH_VARIABLE is not set, or empty"),
    (["--checkpoint", "nope.ckpt"], "no 'nope.ckpt' checkpoint in"),
    (["--source", "no-such-source"], "unknown source 'no-such-source': the label store has no photo of it in the "
                                     "dataset 'demo'; its sources: "),
    (["--source", " "], "a source needs a name, got ' '"),
    (["--dataset", "/elsewhere"], "--dataset goes with --source"),
])
def test_serve_refuses_a_bad_option_before_loading_the_model(run, in_workspace, capsys, options, message):
    assert cli(["serve", run.record.id, "--port", str(free_port()), *options]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_serve_names_an_unknown_run_and_a_port_in_use(run, in_workspace, capsys):
    assert cli(["serve", "no-such-run"]) == 2
    assert "error: unknown run 'no-such-run'" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli(["serve", run.record.id, "--port", str(port)]) == 2
    assert capsys.readouterr().err == f"error: cannot listen on 127.0.0.1 port {port}: Address already in use\n"


def test_the_load_gauge_sheds_what_the_timeout_cannot_serve():
    gauge = LoadGauge(timeout=2.0)
    assert gauge.retry_after(ahead=1_000) is None  # nothing measured yet: nothing refused
    gauge.record(batch_seconds=4.0, batch_size=8)  # 0.5 s a request
    assert gauge.seconds_per_request == 0.5
    # 4 ahead: 2 s, within the timeout; 5: 2.5 s, 1 s after; 9: 4.5 s, 3 s after (rounded up); 40: 20 s.
    assert [gauge.retry_after(ahead) for ahead in (0, 3, 4, 5, 9, 40)] == [None, None, None, 1, 3, 18]
    for _ in range(8):  # the 8 answers of one batch at 0.25 s a request: the average moves by SMOOTHING once
        gauge.record(batch_seconds=2.0, batch_size=8)
    assert gauge.seconds_per_request == pytest.approx(0.5 - 0.25 * (1 - (1 - LoadGauge.SMOOTHING / 8) ** 8))


@pytest.fixture
def fake_server(tmp_path):
    """Start tests/fake_serve.py (a fake model taking `seconds` per batch) with `options`; wait for /health;
    on teardown stop what is left of its process group."""
    started = []

    def start(seconds: float, *options: str) -> SimpleNamespace:
        port, log = free_port(), tmp_path / "server.log"
        env = dict(os.environ, FAKE_SERVE_SECONDS=str(seconds), FAKE_SERVE_PID_FILE=str(tmp_path / "worker.pid"))
        process = start_detached([sys.executable, "tests/fake_serve.py", str(port), *options], log, env, append=False)
        started.append(process)
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if requests.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"not ready after 300 s:\n{log.read_text()}"
            time.sleep(0.3)
        return SimpleNamespace(process=process, url=url, log=log, worker=int((tmp_path / "worker.pid").read_text()))

    yield start
    for process in started:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.mark.slow
def test_a_queue_longer_than_the_timeout_can_serve_gets_503_with_retry_after(fake_server):
    """0.5 s a request, one at a time, 1 s timeout: of 12 sent at once, those with 3 or more ahead are refused."""
    server = fake_server(0.5, "--timeout", "1", "--max-batch-size", "1")
    photo = {"files": {"file": ("a.jpg", b"x")}}
    assert requests.post(f"{server.url}/predict", timeout=60, **photo).json() == {"detail": "a.jpg"}  # measured
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: requests.post(f"{server.url}/predict", timeout=60, **photo), range(12)))
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 503, 504} and 1 <= statuses.count(200) <= 4 and statuses.count(503) >= 8, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["detail"].startswith("too many requests waiting: more than this server's 1 s "
                                                        "timeout can serve; retry in ")
    assert requests.post(f"{server.url}/predict", timeout=60, **photo).status_code == 200  # the queue drained


@pytest.mark.slow
def test_a_dead_model_worker_stops_the_server_with_one_line_and_exit_1(fake_server):
    """The documented behaviour: the server stops promptly, exit 1, its last line says why, no traceback,
    nothing of it left running; a supervisor (systemd, a container's restart policy) restarts it."""
    server = fake_server(0.1)
    assert requests.post(f"{server.url}/predict", timeout=60, files={"file": ("a.jpg", b"x")}).status_code == 200
    os.kill(server.worker, signal.SIGKILL)
    killed = time.monotonic()
    assert server.process.wait(timeout=60) == 1, server.log.read_text()
    log = server.log.read_text()
    assert time.monotonic() - killed < 30, log
    assert log.splitlines()[-1] == (f"error: the model worker (pid {server.worker}) ended (killed by SIGKILL); the "
                                    "server stopped (exit 1) so that its supervisor restarts it")
    assert "Traceback" not in log and "EOFError" not in log, log
    deadline = time.monotonic() + 10
    while group_alive(server.process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(server.process.pid), "processes of the server still running after it exited"
