"""The HTTP server: POST /translate, GET /health, GET /info and a page at /.

`create_app(translator, limits)` builds the FastAPI app; `run(...)` serves it with uvicorn.
Requests are decoded in batches with other requests (`batching.py`). Every error is
answered as `{"error": "...", "field": "..."}` (field: the request field at fault, or
null), never with a traceback; the server keeps serving. What a client sends is bounded
before it costs memory or time (the body's size while it is read, whatever its transfer
encoding; the time to send headers and body; the texts, settings and the answer's size),
and what the server shows is its own: no third-party assets, no server paths
(docs/serve.md, "Threat model").
"""

from __future__ import annotations

import asyncio
import difflib
import ipaddress
import json
import logging
import os
import re
import socket
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import numpy
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from seq2seq import __version__, console, versions
from seq2seq.batching import Batcher
from seq2seq.config import (
    CALL_NAMES,
    DecodeConfig,
    DecodePrecision,
    Runtime,
    ServeLimits,
    SettingError,
)
from seq2seq.errors import UserError, to_stderr
from seq2seq.files import finite
from seq2seq.translation import (
    TextTranslator,
    Translation,
    open_translator,
    translation_record,
)

log = logging.getLogger("seq2seq.serve")


class TranslateRequest(BaseModel):
    """`text` or `texts`; unset decoding settings take the model's defaults (GET /info)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    text: str | None = Field(None, description="One sentence to translate.")
    texts: list[str] | None = Field(None, description="Several sentences, translated in order.")
    beam: int | None = Field(None, description="Beam size; 1 is greedy search.")
    nbest: int | None = Field(None, description="Translations per sentence (at most beam).")
    alpha: float | None = Field(None, description="GNMT length penalty alpha (>= 0).")
    attention: bool = Field(False, description="Also return the attention weights.")


class Attention(BaseModel):
    target: list[str]  # row labels: the output tokens and <eos>
    source: list[str]  # column labels: <sos>, the source tokens, <eos>
    weights: list[list[float]]  # [len(target), len(source)]; each row sums to 1


class Candidate(BaseModel):
    translation: str
    score: float | None  # log-probability (/ length penalty in beams); null if not finite
    tokens: list[str]
    source_tokens: list[str]
    alignment: list[int]  # per output token, the source token it attends to most
    gates: dict[str, list[float]] | None = None  # encoder gate values, for a gated model
    attention: Attention | None = None


class Result(Candidate):
    truncated: bool  # the text was longer than the model's decode.max_source_length tokens
    nbest: list[Candidate] | None = None  # the n best, best first, when nbest > 1


class TranslateResponse(BaseModel):
    translations: list[Result]  # one per text, in order
    beam: int
    nbest: int
    alpha: float


class ErrorResponse(BaseModel):
    error: str
    field: str | None


class RequestError(Exception):
    """A request the server refuses: answered with `status` and the field at fault."""

    def __init__(self, message: str, field: str | None, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


def serving_defaults(
    translator: TextTranslator, limits: ServeLimits, precision: DecodePrecision | None
) -> DecodeConfig:
    """The settings of a request that sets none; refused at start if over the limits.
    The models are prepared for them and warmed up now, not in the first requests."""
    defaults = translator.decode.updated(batch_size=limits.max_batch, precision=precision)
    try:
        request_decode(defaults, TranslateRequest(), limits)
    except RequestError as error:
        raise UserError(f"the model's default decoding settings: {error}") from None
    # A full batch of sentences of 1 to 32 words: the first decoder calls after start set
    # up kernels and memory for each batch shape they meet, which would otherwise slow
    # the first requests (docs/performance.md).
    translator.translate_nbest(
        [" ".join(["ein"] * (1 + i % 32)) for i in range(limits.max_batch)], defaults
    )
    return defaults


def create_app(
    translator: TextTranslator,
    limits: ServeLimits,
    members: Sequence[str] = (),
    precision: DecodePrecision | None = None,
) -> FastAPI:
    """The app serving `translator` (at `precision`, default the model's); `members`
    names its checkpoints (for GET /info: file names, never a server's paths)."""
    defaults = serving_defaults(translator, limits, precision)
    batcher = Batcher(translator.translate_nbest, limits.max_batch, limits.max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()  # uvicorn gets here once the last request has been answered

    # No /docs or /redoc: FastAPI's pages load scripts and fonts from CDNs, which a public
    # server should not make its visitors fetch; /openapi.json describes the API.
    app = FastAPI(
        title="seq2seq",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    add_error_handlers(app)
    app.add_middleware(RequestGuard, limits=limits)
    page = (resources.files("seq2seq") / "static" / "index.html").read_text("utf-8")
    info = model_info(translator, defaults, limits, members)
    errors = {code: {"model": ErrorResponse} for code in (400, 408, 413, 422, 500)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def get_info() -> dict[str, object]:
        return info

    # Unset, not None, leaves a field out: a score that is not finite is still sent, as null.
    @app.post("/translate", response_model_exclude_unset=True, responses=errors)
    async def translate(body: TranslateRequest, request: Request) -> TranslateResponse:
        """Translate `text` or `texts`."""
        return await answer(body, request, batcher, defaults, limits)

    return app


async def answer(
    body: TranslateRequest,
    request: Request,
    batcher: Batcher,
    defaults: DecodeConfig,
    limits: ServeLimits,
) -> TranslateResponse:
    """One POST /translate: checked against the limits, decoded in the batcher's next batch."""
    texts = request_texts(body, limits)
    decode = request_decode(defaults, body, limits)
    check_answer_size(len(texts), decode.nbest, body.attention, limits)
    request.state.texts = len(texts)
    try:
        batched = await batcher.translate(texts, decode)
    except Exception as error:  # this request's own failure; the others were answered
        log.exception("translation failed")
        field = "text" if body.texts is None else "texts"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RequestError(f"translation failed: {reason}", field, 500) from None
    request.state.batch = batched.batch_size
    results = [result(candidates, body.attention, decode) for candidates in batched.candidates]
    return TranslateResponse(
        translations=results, beam=decode.beam_size, nbest=decode.nbest, alpha=decode.alpha
    )


def request_texts(body: TranslateRequest, limits: ServeLimits) -> list[str]:
    """The texts to translate, each checked against the limits."""
    if (body.text is None) == (body.texts is None):
        raise RequestError("give either text (one sentence) or texts (a list)", "text")
    field = "text" if body.texts is None else "texts"
    texts = [body.text] if body.texts is None else body.texts
    if not texts or len(texts) > limits.max_texts:
        count = f"{len(texts)} texts" if texts else "no texts"
        raise RequestError(f"{count}; this server takes 1 to {limits.max_texts}", field)
    for index, text in enumerate(texts):
        name = field if body.texts is None else f"texts[{index}]"
        if not text.strip():
            raise RequestError(f"{name} is empty", field)
        if len(text) > limits.max_chars:
            limit = f"this server takes at most {limits.max_chars}"
            raise RequestError(f"{name} has {len(text)} characters; {limit}", field)
        if any("\ud800" <= character <= "\udfff" for character in text):  # JSON allows them
            raise RequestError(f"{name} is not valid Unicode (a lone surrogate)", field)
    return texts


def request_decode(
    defaults: DecodeConfig, body: TranslateRequest, limits: ServeLimits
) -> DecodeConfig:
    """The request's decoding settings, validated by DecodeConfig and within the limits;
    errors speak of the request's fields (`beam`), not of config keys or CLI options."""
    asked = {key: getattr(body, name.field) for key, name in CALL_NAMES.items() if name.field}
    try:
        decode = defaults.updated(**asked)
    except SettingError as error:
        field = CALL_NAMES[error.key].field if error.key in CALL_NAMES else None
        raise RequestError(f"{field}: {error.reason}" if field else str(error), field) from None
    for field, value, limit in (
        ("beam", decode.beam_size, limits.max_beam),
        ("nbest", decode.nbest, limits.max_nbest),
    ):
        if value > limit:
            raise RequestError(f"{field} {value} is over this server's limit {limit}", field)
    return decode


def check_answer_size(texts: int, nbest: int, attention: bool, limits: ServeLimits) -> None:
    """Refuses, before decoding, a request whose answer would be too large: it holds
    texts x nbest translations, and with attention a matrix of weights for each."""
    translations = texts * nbest
    asked = f"{texts} texts x nbest {nbest} = {translations} translations"
    if translations > limits.max_translations:
        field = "texts" if nbest == 1 else "nbest"
        raise RequestError(f"{asked}, over this server's limit {limits.max_translations}", field)
    if attention and translations > limits.max_attention:
        limit = f"over this server's limit {limits.max_attention} with attention"
        raise RequestError(f"{asked}, {limit}", "attention")


def result(candidates: list[Translation], attention: bool, decode: DecodeConfig) -> Result:
    """One text's answer: the best translation, and the n best when more were asked for."""
    records = [candidate(translation, attention) for translation in candidates]
    nbest = {"nbest": records} if decode.nbest > 1 else {}
    return Result(**records[0], truncated=candidates[0].truncated, **nbest)


def candidate(translation: Translation, attention: bool) -> dict[str, object]:
    record = finite(translation_record(translation))  # a NaN score is null
    if attention:
        target, source, weights = translation.attention_grid()
        # [len(target), len(source)], a torch tensor or a numpy array
        weights = numpy.nan_to_num(numpy.asarray(weights, dtype=numpy.float32))
        matrix = [[round(w, 4) for w in row] for row in weights.tolist()]
        record["attention"] = {"target": target, "source": source, "weights": matrix}
    return record


def model_info(
    translator: TextTranslator, decode: DecodeConfig, limits: ServeLimits, members: Sequence[str]
) -> dict[str, object]:
    """GET /info: what the server translates with, and its limits."""
    found = versions(translator.runtime, "fastapi", "uvicorn")
    python = found.pop("python")
    models = [
        {"checkpoint": members[i] if i < len(members) else None, **member}
        for i, member in enumerate(translator.members())
    ]
    return {
        # what the page calls the model: its checkpoints' file (or model folder) names
        "name": " + ".join(members) or None,
        "languages": {  # language codes, e.g. "de"
            "source": translator.src.tokenizer.lang,
            "target": translator.trg.tokenizer.lang,
        },
        "members": models,
        "parameters": sum(member["parameters"] for member in models),
        "vocabulary": {"source": len(translator.src.vocab), "target": len(translator.trg.vocab)},
        "decode": decode.model_dump(),
        "limits": limits.model_dump(),
        "device": str(translator.device),
        "runtime": translator.runtime,  # torch or onnxruntime
        "versions": found,  # seq2seq, the runtime, fastapi, uvicorn
        "python": python,
    }


def error_response(status: int, message: str, field: str | None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def unknown_field(name: str) -> str:
    """'"bean": unknown field (did you mean "beam"?)', as config keys are suggested."""
    fields = list(TranslateRequest.model_fields)
    match = difflib.get_close_matches(name, fields, n=1, cutoff=0.5)
    hint = f"did you mean {json.dumps(match[0])}?" if match else f"fields: {', '.join(fields)}"
    return f"{json.dumps(name)}: unknown field ({hint})"


def add_error_handlers(app: FastAPI) -> None:
    """Every error in one style: {"error": "...", "field": ...}, no traceback."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, str(error), error.field)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error", first["msg"])
            return error_response(400, f"malformed JSON: {reason}", "body")
        loc = [str(part) for part in first["loc"][1:]]  # after "body"
        if not loc:  # no body, or not an object (or not sent as application/json)
            message = f"the body must be a JSON object (application/json): {first['msg']}"
            return error_response(400, message, "body")
        if first["type"] == "extra_forbidden":
            return error_response(422, unknown_field(loc[0]), loc[0])
        where = loc[0] + "".join(f"[{part}]" for part in loc[1:])
        return error_response(422, f"{where}: {first['msg']}", loc[0])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code != 400:  # 404, 405: the path or the method
            return error_response(error.status_code, str(error.detail), None)
        # FastAPI's 400: a body it could not parse (JSON nested deeper than Python recurses)
        cause = f": {error.__cause__}" if error.__cause__ else ""
        return error_response(400, f"{error.detail}{cause}", "body")

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(error).__name__}", None)


class RequestGuard:
    """Reads each request's body whole, within the size and time limits, before the app
    sees it, and logs one line per request. Plain ASGI: Starlette's BaseHTTPMiddleware
    costs a task and a stream per request, and the event loop shares the CPU with the
    decoder."""

    def __init__(self, app: ASGIApp, limits: ServeLimits):
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500
        state = scope.setdefault("state", {})  # the endpoint's request.state

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            try:
                body = await read_body(scope, receive, self.limits)
            except RequestError as refusal:
                # The rest of the body is not read, so the connection cannot carry another
                # request: it closes.
                response = error_response(refusal.status, str(refusal), refusal.field)
                response.headers["connection"] = "close"
                return await response(scope, receive, send_noting_status)
            await self.app(scope, replaying(body, receive), send_noting_status)
        finally:
            # e.g. `127.0.0.1 POST /translate 200 texts=1 batch=12 35.2ms`: batch counts
            # the sentences decoded together with this request's
            texts = f" texts={state['texts']}" if "texts" in state else ""
            batch = f" batch={state['batch']}" if "batch" in state else ""
            client = scope["client"][0] if scope.get("client") else "-"
            milliseconds = (time.perf_counter() - start) * 1000
            where = f"{client} {scope['method']} {scope['path']}"
            log.info("%s %d%s%s %.1fms", where, status, texts, batch, milliseconds)


async def read_body(scope: Scope, receive: Receive, limits: ServeLimits) -> bytes:
    """The request's body; RequestError 413 once it is over `limits.max_body()` bytes,
    announced or as it arrives (a chunked body announces no length), 408 if it has not
    all arrived within `limits.request_timeout` seconds."""
    max_body = limits.max_body()
    length = Headers(scope=scope).get("content-length", "0")
    if length.isdigit() and int(length) > max_body:
        raise RequestError(f"body over {max_body} bytes", "body", 413)
    body = bytearray()

    async def read() -> None:
        while True:
            message = await receive()
            body.extend(message.get("body", b""))
            if len(body) > max_body:
                raise RequestError(f"body over {max_body} bytes", "body", 413)
            if not message.get("more_body", False):  # the end, or the client went away
                return

    try:
        await asyncio.wait_for(read(), limits.request_timeout)
    except asyncio.TimeoutError:
        seconds = f"{limits.request_timeout:g}"
        raise RequestError(f"the body did not arrive within {seconds} s", "body", 408) from None
    return bytes(body)


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app: the body read, then what the client does next (disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


# Control characters, the line separators Python's str.splitlines() also breaks at, and
# the backslash that escapes them.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def printable(text: str) -> str:
    """`text` on one line: control characters and backslashes escaped as in Python
    (a newline is `\\n`), so that what a client sends cannot pass for a line of its own."""
    return _UNPRINTABLE.sub(lambda match: match[0].encode("unicode_escape").decode(), text)


class LogFormatter(logging.Formatter):
    """Log records as lines of their own: a message on one line (a request's path may hold
    a newline, decoded from %0a), each line of a traceback indented."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record).rstrip("\n"))

    def formatException(self, exc_info: tuple) -> str:
        lines = super().formatException(exc_info).split("\n")
        return "\n".join("    " + printable(line) for line in lines)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with its keep-alive timer also bounding how long a
    client takes to send a request's headers. uvicorn arms that timer only once a response
    is sent, and stops it at the first byte that arrives after: a client that connects and
    sends nothing, or headers a byte at a time, would hold its connection forever, and
    with a request begun, hold up shutdown. Here it runs from the connection's start, and
    until a request's headers are complete (uvicorn's handle_events stops it then)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:  # uvicorn's, without stopping the timer
        self.conn.receive_data(data)
        self.handle_events()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; a port in use or a bad address is a UserError. Made with proto
    IPPROTO_TCP, not 0 as socket.create_server does: asyncio turns Nagle's algorithm off
    (TCP_NODELAY) only on connections of such a socket, and with it on, a response's body
    waited for the client's delayed ACK of its headers, on every request of a kept-alive
    connection."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock: socket.socket | None = None
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        if os.name == "posix":  # as create_server: a restarted server can bind at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
        return sock
    except (OSError, OverflowError) as error:
        if sock is not None:
            sock.close()
        reason = getattr(error, "strerror", None) or error
        raise UserError(f"cannot listen on {host} port {port}: {reason}") from None


def run(
    models: Sequence[Path],
    host: str,
    port: int,
    device: str,
    limits: ServeLimits,
    precision: DecodePrecision | None = None,
    runtime: Runtime = "auto",
) -> None:
    """Serve until SIGTERM or SIGINT; then the requests in flight have `limits.grace`
    seconds to be answered before the server exits."""
    with listen(host, port) as sock:
        address = sock.getsockname()[0]
        if not ipaddress.ip_address(address).is_loopback:
            console.warn(
                f"serving on {address}, beyond this machine, with no authentication or "
                "TLS: put a reverse proxy in front (docs/serve.md)"
            )
        translator = open_translator(models, device, runtime, precision)
        app = create_app(translator, limits, [Path(path).name for path in models], precision)
        handler = logging.StreamHandler()
        handler.setFormatter(LogFormatter("%(asctime)s %(message)s"))
        logging.basicConfig(handlers=[handler], level=logging.INFO)
        name = f"[{host}]" if ":" in host else host
        to_stderr(f"serving on http://{name}:{sock.getsockname()[1]}\n")
        uvicorn.Server(server_config(app, limits)).run(sockets=[sock])


def server_config(app: FastAPI, limits: ServeLimits) -> uvicorn.Config:
    """How uvicorn serves `app`: the request log is the app's own (RequestGuard), and no
    client holds a connection or the shutdown beyond the time limits."""
    return uvicorn.Config(
        app,
        http=BoundedH11Protocol,
        timeout_keep_alive=limits.request_timeout,  # BoundedH11Protocol: headers too
        timeout_graceful_shutdown=limits.grace,
        access_log=False,
        log_level="info",
        log_config=None,
    )
