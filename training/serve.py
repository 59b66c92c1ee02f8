"""`python -m training serve RUN_ID`: a run's Predictor behind LitServe, one photo per request,
requests batched together on the way to the model.

Every answer is made as one line of `python -m training predict --json` is made: the same
Predictor (training.checkpoints.load_predictor), the same batch function (Predictor.predict_batch)
and the same JSON (FilePrediction.as_json). Only the photo differs: it comes as bytes
(core.model.predictor.Upload), named by the upload's file name or the request's "name"
(core.labels.uploads.display_name), and nothing in a request is ever opened as a path. Its heads are
accepted as `predict --source` accepts them (training.acceptance): under the rules of the request's
source (the form field or JSON key "source"), else the server's --source, else the run's gated rule.

POST /predict takes multipart/form-data with the photo in the field `file` (and optionally the text
field `source`), or a JSON object {"image": "<base64>", "name": "<optional>", "source": "<optional>"}.
Answers: 200 with the JSON object; otherwise {"detail": "<message>"} with 400 (a body that is not
JSON, or a form that cannot be read), 401 / 403 (API key missing / wrong), 413 (a request over the
size limit), 422 (no photo in the request, bad base64, a JSON body other than that object, a photo
the command line refuses as well: its ImageRejected message, or a source that is no name or that the
label store does not know), 503 with Retry-After (more requests waiting than --timeout can serve:
see LoadGauge), 504 (a request that waited longer than --timeout for the model). Each answer from the
model's worker carries X-Batch-Size, the number of requests batched with it, and X-Batch-Seconds, the
time that batch took in the worker. GET /health answers "ok" once the model is loaded (no API key
needed); /docs is the OpenAPI page.

No `from __future__ import annotations` in this module: LitServe reads decode_request's and
encode_response's annotations as live types to build the /predict route and its OpenAPI entry.
"""

import base64
import binascii
import hmac
import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import litserve as ls
import torch
from fastapi import HTTPException, Request, Security
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from litserve.loops import BatchedLoop
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.labels.uploads import display_name
from core.model.predictor import FilePrediction, Upload
from core.trust.abstention import TARGET_ERROR, check_target
from core.trust.sources import check_source
from training.acceptance import Acceptance, rules_dataset
from training.checkpoints import load_predictor, predict_device
from training.docs_offline import serve_docs_offline

PREDICT_PATH = "/predict"
HEALTH_PATH = "/health"
API_KEY_HEADER = "X-API-Key"
BATCH_SIZE_HEADER = "X-Batch-Size"
BATCH_SECONDS_HEADER = "X-Batch-Seconds"
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds to: this machine only, or every interface
MB = 1024 * 1024
REFUSALS = {400: "a body that cannot be read: not JSON, JSON nested too deeply, or a broken multipart form",
            401: "no API key (X-API-Key)", 403: "a wrong API key",
            413: "the request is over the size limit",
            422: "no photo in the request, a photo that cannot be read (the message predict gives), or a "
                 "source that is no name or that the label store does not know",
            503: "more requests waiting than the timeout can serve: retry after Retry-After seconds",
            504: "the request waited longer than the timeout for the model"}
MULTIPART, URLENCODED = "multipart/form-data", "application/x-www-form-urlencoded"  # LitServe parses these as forms
WORKER_DIED = 1  # serve's exit status when a model worker died
WATCH_SECONDS = 0.5  # how often the model workers are checked
NO_PHOTO = "no photo: send it as a file in the multipart form field 'file'"
SOURCE_HELP = ("the photo's source (a folder's name, 'uploads', 'catalogue'): its tags are accepted under that "
               "source's rules in the label store; default: the server's --source, else the run's rule")
SEND_A_PHOTO = "send the photo as a file in the multipart form field 'file', or JSON {\"image\": \"<base64>\"}"
PHOTO_JSON = '{"image": "<base64>", "name": "<optional>", "source": "<optional>"}'


@dataclass(frozen=True)
class ServeSettings:
    """Everything `python -m training serve` takes; invalid values raise ValueError naming the option."""

    run_id: str
    run_folder: str
    checkpoint: str = "best"  # best, last, or a file in the run's checkpoints/ (as for predict)
    host: str = "127.0.0.1"  # one of HOSTS; 127.0.0.1 keeps the server to this machine
    port: int = 8000
    device: str = "auto"  # training.checkpoints.PREDICT_DEVICES; on CUDA one model copy per visible GPU
    top_k: int = 3  # labels per head in each answer
    target_error: float = TARGET_ERROR  # the error an accepted tag may have (core.trust.abstention)
    max_batch_size: int = 32  # requests answered by one forward pass at most
    batch_timeout: float = 0.01  # seconds a batch waits for more requests before it runs
    max_request_mb: float = 20.0  # larger requests get 413 before the photo is read (1 MB = 2**20 bytes)
    timeout: float = 30.0  # seconds a request may wait for the model: then 504; more waiting than that: 503
    api_key: str | None = field(default=None, repr=False)  # when set, X-API-Key must equal it
    source: str | None = None  # whose rules requests naming no source are accepted under; None: the run's rule
    dataset: str | None = None  # the dataset whose photos' sources are meant (training.acceptance); None: the run's

    def __post_init__(self) -> None:
        predict_device(self.device)  # an unknown device, or cuda without a GPU
        if self.source is not None:
            try:
                check_source(self.source)
            except ValueError as error:
                raise ValueError(f"--source: {error}") from None
        if self.host not in HOSTS:
            raise ValueError(f"--host must be one of {', '.join(HOSTS)}, got {self.host!r}")
        if not 1024 <= self.port <= 65535:
            raise ValueError(f"--port must be from 1024 to 65535, got {self.port}")
        for option, value in (("--top-k", self.top_k), ("--max-batch-size", self.max_batch_size)):
            if value < 1:
                raise ValueError(f"{option} must be at least 1, got {value}")
        check_target(self.target_error)
        if self.batch_timeout <= 0:  # at 0 LitServe's batching loop polls without pause, a CPU core at 100 %
            raise ValueError(f"--batch-timeout must be more than 0 seconds, got {self.batch_timeout}")
        if not self.timeout > self.batch_timeout:  # LitServe's own condition
            raise ValueError(f"--timeout must be more than --batch-timeout ({self.batch_timeout:g} s), "
                             f"got {self.timeout:g}")
        if self.max_request_mb <= 0:
            raise ValueError(f"--max-request-mb must be more than 0, got {self.max_request_mb}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("the API key is empty")

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * MB)


class PhotoJSON(BaseModel):
    """A photo sent as JSON."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="the photo file's bytes (JPEG, PNG, WebP or AVIF), base64-encoded")
    name: str | None = Field(None, description="a name for the photo, given back as `path`; default \"upload\"")
    source: str | None = Field(None, description=SOURCE_HELP)


class GuessJSON(BaseModel):
    label: str
    p: float


class RuleJSON(BaseModel):
    threshold: float | None = Field(description="the lowest confidence accepted; null: a person decides")
    gated: bool = Field(description="only of photos like the calibration photos (`typical`)")
    why: str = Field(description="where the rule comes from, or why the head is not accepted")


class TagsJSON(BaseModel):
    """One line of `predict --json`: the photo's name and, per head, the top-k labels by probability."""

    model_config = ConfigDict(extra="allow")  # whatever else FilePrediction.as_json gives passes through
    path: str
    predictions: dict[str, list[GuessJSON]]
    accepted: dict[str, str | None] | None = Field(
        None, description="per head the label that needs no person at the server's target error under `rules`, "
                          "else null")
    source: str | None = Field(None, description="the source whose rules `accepted` follows; null: the run's rule")
    rules: dict[str, RuleJSON] | None = Field(None, description="per head the rule `accepted` follows, and why")
    typicality: float | None = Field(
        None, description="the photo's distance to the photos the error rate was certified on (the run's gate)")
    typical: bool | None = Field(None, description="false: unlike the calibration photos, nothing is accepted")
    note: str | None = Field(None, description="why nothing is accepted, for a photo unlike the calibration photos")


@dataclass(frozen=True)
class Refusal:
    """A request refused before the model saw it: the HTTP status and why."""

    status: int
    detail: str


@dataclass(frozen=True)
class Photo:
    """A request's photo, and the source it names (None: the server's --source, else the run's rule)."""

    upload: Upload
    source: str | None = None


def parse_photo_json(value) -> PhotoJSON | Refusal:
    """A JSON value as PhotoJSON, or the 422 saying what is wrong with it (any other shape, however nested)."""
    try:
        return PhotoJSON.model_validate(value)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, problem['loc'])) or 'body'}: {problem['msg']}"
                             for problem in error.errors())
        return Refusal(422, f"expected JSON {PHOTO_JSON}: {problems}")


def photo_of(upload: Upload, source) -> Photo | Refusal:
    """The request's photo with the source it names, checked here at the edge (core.trust.sources.check_source)."""
    if source is None:
        return Photo(upload)
    if not isinstance(source, str):  # a form's file where its text field should be
        return Refusal(422, "source: a text field naming the source, not a file")
    try:
        return Photo(upload, check_source(source))
    except ValueError as error:
        return Refusal(422, f"source: {error}")


class LoadGauge:
    """Sheds load early: how long a new /predict request would wait for the model, estimated as the
    requests ahead of it (those this HTTP process holds, waiting or being answered) times the time
    a request takes in the worker (each batch's time over its size, a moving average of the last
    batches); over the timeout, it would get 504 after waiting that long, so it gets 503 with
    Retry-After at once instead (after the excess wait: then the queue ahead fits the timeout, if
    nothing is added).

    LitServe runs one HTTP process per model worker, all feeding one queue: N processes each holding
    about 1/N of the requests, served by N workers, so one process's share gives the wait. Under load
    batches are full and the time per request is that of a full batch; after a quiet spell it is that
    of the small batches then, higher: a sudden burst is refused a little early (a retry a second
    later) rather than left to wait for a 504."""

    SMOOTHING = 0.2  # weight of each new batch in the moving average

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.in_flight = 0
        self.seconds_per_request: float | None = None  # None until a first batch answered

    def record(self, batch_seconds: float, batch_size: int) -> None:
        """One answer of a batch of `batch_size` that took `batch_seconds` (each of its answers counts 1/size)."""
        sample = batch_seconds / batch_size
        if self.seconds_per_request is None:
            self.seconds_per_request = sample
        else:
            self.seconds_per_request += (sample - self.seconds_per_request) * self.SMOOTHING / batch_size

    def retry_after(self, ahead: int) -> int | None:
        """Seconds to come back in (at least 1) when `ahead` requests before a new one would make it wait
        longer than the timeout, else None."""
        if self.seconds_per_request is None:
            return None
        wait = ahead * self.seconds_per_request
        return max(1, math.ceil(wait - self.timeout)) if wait > self.timeout else None


class PredictGate:
    """ASGI middleware, for /predict: counts the requests in flight in this HTTP process and measures each
    batch's time from its answers' headers, for `gauge`; and gives Content-Type's media type in lower case
    (it is case-insensitive, RFC 9110; LitServe recognises a form by a case-sensitive prefix), its
    parameters (the boundary) as sent."""

    def __init__(self, app: ASGIApp, gauge: LoadGauge) -> None:
        self.app = app
        self.gauge = gauge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT_PATH:
            await self.app(scope, receive, send)
            return
        scope = {**scope, "headers": [(name, lower_media_type(value) if name == b"content-type" else value)
                                      for name, value in scope["headers"]]}

        async def measure(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                size, seconds = headers.get(BATCH_SIZE_HEADER.lower().encode()), headers.get(
                    BATCH_SECONDS_HEADER.lower().encode())
                if size and seconds:
                    self.gauge.record(float(seconds), int(size))
            await send(message)

        self.gauge.in_flight += 1
        try:
            await self.app(scope, receive, measure)
        finally:
            self.gauge.in_flight -= 1


def lower_media_type(value: bytes) -> bytes:
    media_type, separator, parameters = value.partition(b";")
    return media_type.strip().lower() + separator + parameters


class TaggerAPI(ls.LitAPI):
    """The LitAPI: a request -> a Photo -> a batch through Predictor.predict_batch, each answer's heads
    accepted under its source's rules (training.acceptance) -> the JSON answer.

    Requests are refused as values (Refusal), not exceptions: in a batch, an exception would fail
    every request batched with the bad one."""

    def __init__(self, settings: ServeSettings) -> None:
        # BatchedLoop also at max_batch_size 1, so that predict always takes a list.
        super().__init__(max_batch_size=settings.max_batch_size, batch_timeout=settings.batch_timeout,
                         api_path=PREDICT_PATH, loop=BatchedLoop())
        self.settings = settings
        self.predictor = None
        self.acceptance = None
        self.gauge = LoadGauge(settings.timeout)  # one per HTTP process (a fork: its own copy)

    def setup(self, device: str) -> None:
        """Load the run's Predictor on `device` (LitServe's "cpu" or "cuda:<i>", one worker each); on a GPU,
        run it once at every batch shape it can take, before the first request."""
        target = torch.device(device)
        if target.type == "cuda":
            torch.cuda.set_device(target)  # load_predictor's "cuda" is then this worker's own GPU
        self.predictor = load_predictor(self.settings.run_folder, self.settings.checkpoint,
                                        run_id=self.settings.run_id, device=target.type,
                                        target_error=self.settings.target_error)
        self.acceptance = Acceptance(self.predictor.trust, self.settings.target_error, self.settings.run_id,
                                     rules_dataset(self.settings.run_folder, self.settings.dataset))
        if target.type == "cuda":
            self.predictor.warm_up(self.settings.max_batch_size)

    def decode_request(self, request: Request) -> Photo | Refusal:
        """The photo in what LitServe parsed, and the source it names: a form (multipart fields `file`
        and `source`) or a JSON value."""
        if isinstance(request, FormData):
            photo = request.get("file")
            if not isinstance(photo, UploadFile):
                return Refusal(422, NO_PHOTO)
            return photo_of(Upload(display_name(photo.filename or ""), photo.file.read()), request.get("source"))
        body = parse_photo_json(request)
        if isinstance(body, Refusal):
            return body
        try:
            data = base64.b64decode(body.image, validate=True)
        except binascii.Error as error:
            return Refusal(422, f"image: not valid base64 ({error})")
        return photo_of(Upload(display_name(body.name or ""), data), body.source)

    def predict(self, requests: list, context: list[dict]) -> list[FilePrediction | Refusal]:
        """One forward pass over the batch's photos whose source the label store knows, each answer's
        heads accepted under its source's rules; a refusal for the others."""
        started = time.perf_counter()
        answers: list[FilePrediction | Refusal | None] = [
            request if isinstance(request, Refusal) else None for request in requests]
        sources: dict[int, str | None] = {}
        for index, request in enumerate(requests):
            if not isinstance(request, Photo):
                continue
            source = request.source or self.settings.source
            try:
                sources[index] = None if source is None else self.acceptance.check(source)
            except ValueError as error:
                answers[index] = Refusal(422, f"source: {error}")
        results = self.predictor.predict_batch([requests[index].upload for index in sources], self.settings.top_k)
        for (index, source), result in zip(sources.items(), results):
            answers[index] = self.acceptance.accept(result, source)
        seconds = time.perf_counter() - started
        for request_context in context:
            request_context.update(batch_size=len(requests), batch_seconds=seconds)
        return answers

    def encode_response(self, output: FilePrediction | Refusal, context: dict) -> TagsJSON:
        """The response itself, so that it carries its status and X-Batch-Size; the annotation gives
        /docs the schema of a 200 answer (FastAPI passes a Response through unchanged)."""
        headers = {BATCH_SIZE_HEADER: str(context["batch_size"]),
                   BATCH_SECONDS_HEADER: f"{context['batch_seconds']:.4f}"}
        if isinstance(output, Refusal):
            return JSONResponse({"detail": output.detail}, status_code=output.status, headers=headers)
        if output.error is not None:
            return JSONResponse({"detail": output.error}, status_code=422, headers=headers)
        return JSONResponse(output.as_json(), headers=headers)

    async def authorize(self, request: Request,
                        api_key: str | None = Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))) -> None:
        """Run by LitServe before each of its routes (it calls this hook `authorize`): the API key,
        when the server has one (not for /health); then, for /predict, room in the queue (LoadGauge)
        and a body LitServe can parse (it answers 500 to a body it cannot parse) within the size limit."""
        key = self.settings.api_key
        if key is not None and request.url.path != HEALTH_PATH:
            if api_key is None:
                raise HTTPException(401, f"this server needs an API key: send it in the {API_KEY_HEADER} header")
            if not hmac.compare_digest(api_key.encode(), key.encode()):
                raise HTTPException(403, f"wrong API key ({API_KEY_HEADER})")
        if request.method == "POST" and request.url.path == PREDICT_PATH:
            retry_after = self.gauge.retry_after(ahead=self.gauge.in_flight - 1)  # PredictGate counted this one
            if retry_after is not None:
                raise HTTPException(503, f"too many requests waiting: more than this server's "
                                         f"{self.settings.timeout:g} s timeout can serve; retry in {retry_after} s",
                                    headers={"Retry-After": str(retry_after)})
            await self._check_body(request)

    async def _check_body(self, request: Request) -> None:
        """Parse the body here, where a failure can be answered 400 or 422 with a message: the form or JSON
        is cached on the request, and LitServe's own parse reuses it (PredictGate made the media type
        lower case, as LitServe expects it)."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.max_request_bytes:
            raise HTTPException(413, f"the request is {int(length) / MB:.1f} MB, more than this server's "
                                     f"{self.settings.max_request_mb:g} MB limit")
        media_type = request.headers.get("content-type", "").partition(";")[0]
        if media_type == URLENCODED:  # a form of text fields never holds a file
            raise HTTPException(422, NO_PHOTO)
        if media_type == MULTIPART:
            try:
                await request.form()
            except HTTPException:  # FastAPI's: LitServe's 413 for a body sent without a length
                raise
            except StarletteHTTPException as error:  # Starlette's 400: no boundary, too many fields or files
                raise HTTPException(400, f"the multipart form cannot be read ({error.detail}); "
                                         f"{SEND_A_PHOTO}") from error
            except ValueError as error:  # python-multipart's: a broken part or boundary
                raise HTTPException(400, f"the multipart form cannot be read ({error}); {SEND_A_PHOTO}") from error
            return
        try:
            body = await request.json()
        except ValueError as error:
            raise HTTPException(400, f"the body is not JSON ({error}); {SEND_A_PHOTO}") from error
        except RecursionError as error:
            raise HTTPException(400, f"the body is JSON nested too deeply to read; {SEND_A_PHOTO}") from error
        refusal = parse_photo_json(body)  # here, so that only a flat object goes on to the model's queue
        if isinstance(refusal, Refusal):
            raise HTTPException(refusal.status, refusal.detail)


def build_server(settings: ServeSettings) -> ls.LitServer:
    """The LitServer for `settings`: one worker on the CPU, or one per visible GPU."""
    on_gpu = predict_device(settings.device).type == "cuda"
    api = TaggerAPI(settings)
    server = ls.LitServer(
        api, accelerator="cuda" if on_gpu else "cpu",
        devices=torch.cuda.device_count() if on_gpu else 1, workers_per_device=1, timeout=settings.timeout,
        healthcheck_path=HEALTH_PATH, max_payload_size=settings.max_request_bytes,  # also bodies sent without a length
        middlewares=[(PredictGate, {"gauge": api.gauge})],
        model_metadata={"run": settings.run_id, "checkpoint": settings.checkpoint, "top_k": settings.top_k,
                        "target_error": settings.target_error, "timeout": settings.timeout,
                        "source": settings.source})
    document_predict_route(server, settings.run_id)
    serve_docs_offline(server.app)
    return server


def document_predict_route(server: ls.LitServer, run_id: str) -> None:
    """Give /predict's OpenAPI entry its two request bodies, so that /docs offers a file upload and
    a JSON example (decode_request takes the raw Request, which OpenAPI cannot describe)."""
    server.app.title = f"Fashion Tagger: run {run_id}"
    (route,) = [route for route in server.app.routes if isinstance(route, APIRoute) and route.path == PREDICT_PATH]
    route.summary = "Tag one photo"
    route.description = ("The photo as a multipart upload (field `file`) or as JSON with base64, and optionally "
                         "its source, whose rules the accepted tags follow. The answer is one line of "
                         "`python -m training predict --json [--source NAME]`; a refused photo gets 422 with the "
                         "command line's message.")
    route.openapi_extra = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "the photo file"},
            "source": {"type": "string", "description": SOURCE_HELP}}}},
        "application/json": {"schema": PhotoJSON.model_json_schema()},
    }}, "responses": {str(status): {"description": why, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"detail": {"type": "string"}}}}}} for status, why in REFUSALS.items()}}


def check_listen(host: str, port: int) -> None:
    """ValueError naming the address when nothing could listen on host:port now (e.g. it is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ValueError(f"cannot listen on {host} port {port}: {error.strerror or error}") from error


def serve(settings: ServeSettings) -> int:
    """Run the server until Ctrl+C or SIGTERM (0), or until a model worker dies (WORKER_DIED, after one line on
    stderr saying so: a supervisor restarts the server, see the README); then stop its processes (HTTP
    servers, model workers)."""
    check_listen(settings.host, settings.port)
    address = f"http://{'[::1]' if settings.host == '::' else '127.0.0.1'}:{settings.port}"
    print(f"serving run {settings.run_id}, checkpoint {settings.checkpoint}, at {address}: POST {PREDICT_PATH}, "
          f"GET {HEALTH_PATH} (ok once the model is loaded), /docs; "
          + (f"API key required ({API_KEY_HEADER})" if settings.api_key else "no API key"), file=sys.stderr, flush=True)
    if settings.host != "127.0.0.1" and settings.api_key is None:
        print(f"warning: listening on {settings.host} without an API key: anyone who can reach this machine can use "
              "the model (--api-key-env)", file=sys.stderr, flush=True)
    stopping = threading.Event()
    interrupt_on_signals(stopping)
    server = build_server(settings)
    deaths = watch_workers(server, stopping)
    try:
        server.run(host=settings.host, port=settings.port, generate_client_file=False, access_log=False)
    except KeyboardInterrupt:  # while the model loads: LitServe stops its processes only once serving
        pass
    finally:
        stopping.set()
        for worker in getattr(server, "inference_workers", []):
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=10)
    if deaths:
        print(f"error: {deaths[0]}; the server stopped (exit {WORKER_DIED}) so that its supervisor restarts it",
              file=sys.stderr, flush=True)
        return WORKER_DIED
    return 0


def watch_workers(server: ls.LitServer, stopping: threading.Event) -> list[str]:
    """Watch the model workers from a thread: when one ends while the server is not stopping, say why in the
    list returned and interrupt the main thread, as Ctrl+C does, so that LitServe stops the rest.

    In place of LitServe's own watch (LitServer._monitor_workers): that one stops the server from its
    thread, and the main thread then dies on the manager it shut down (an EOFError traceback, 5 s
    later). Its restart_workers (0.2.19) restarts the worker, but the requests it held are never
    answered (it fails them only in the main process, not in the HTTP processes that wait for them) and
    a worker that cannot load restarts forever: a supervisor restarting the whole server does better."""
    server._monitor_workers = False
    deaths: list[str] = []

    def watch() -> None:
        while not stopping.wait(WATCH_SECONDS):
            dead = [worker for worker in getattr(server, "inference_workers", []) if worker.exitcode is not None]
            if dead and not stopping.is_set():
                code = dead[0].exitcode
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                deaths.append(f"the model worker (pid {dead[0].pid}) ended ({how})")
                stopping.set()
                # Its HTTP servers' requests wait for answers that will not come: do not wait 30 s for them.
                server.uvicorn_graceful_timeout = 1
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # the main thread's wait ends
                return

    threading.Thread(target=watch, name="model-worker-watch", daemon=True).start()
    return deaths


def interrupt_on_signals(stopping: threading.Event) -> None:
    """Make SIGTERM (a plain `kill`, `docker stop`) and SIGINT raise KeyboardInterrupt in this process,
    so that LitServe shuts down the processes it started, and set `stopping` (the workers then end
    by design); in those forked from this one the signal keeps its default action (uvicorn re-raises
    it after its own graceful shutdown)."""
    owner = os.getpid()

    def handle(signum, frame) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        stopping.set()
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
