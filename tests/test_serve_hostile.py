"""The server under hostile clients, always through a real uvicorn server: `seq2seq serve`
in a subprocess (signals, the request log, the warning about a public address), or
create_app served by uvicorn in a thread with the configuration `serve` uses. Raw sockets
send what a well-behaved client never would: chunked bodies beyond the limit, headers and
bodies that never end, forged log lines."""

from __future__ import annotations

import json
import logging
import math
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from load_test import start_server

from seq2seq.config import DecodeConfig, ServeLimits
from seq2seq.serve import LogFormatter, create_app, listen, server_config
from seq2seq.translator import Translator

# request_timeout: how long a client has to send its headers, then its body.
LIMITS = ServeLimits(max_chars=80, max_texts=4, max_beam=6, max_nbest=3, request_timeout=1.0)
GOOD = {"text": "Ein Hund läuft."}


@contextmanager
def serving(app, limits: ServeLimits) -> Iterator[str]:
    """`app` served by uvicorn as `seq2seq serve` serves it, in a thread, on a free local
    port -> its base URL."""
    server = uvicorn.Server(server_config(app, limits))
    with listen("127.0.0.1", 0) as sock:
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert server.started, "the server did not start"
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(30)


@pytest.fixture(scope="module")
def url(toy_translator: Translator) -> Iterator[str]:
    with serving(create_app(toy_translator, LIMITS, ["toy.pt"]), LIMITS) as base:
        yield base


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the one response the server sends before it closes."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # the server closed with part of the request unread
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), json.loads(body)


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (None: still open after `seconds`), while
    the client sends `trickle` a byte every 0.1 s."""
    start = time.monotonic()
    for byte in trickle.ljust(int(seconds * 10), b"a"):
        readable, _, _ = select.select([sock], [], [], 0.1)
        try:
            if readable and sock.recv(1024) == b"":
                return time.monotonic() - start
            if trickle:
                sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
    return None


def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives(url: str) -> None:
    """A chunked body announces no length: it is counted as it arrives, and refused with
    413 once over the limit, long before the client has sent all it would."""
    total, chunk = 4 << 20, b"a" * 16384
    with connect(url) as sock:
        sock.sendall(
            b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\na\r\n{"text": "\r\n'
        )
        sent = 0
        while sent < total and not select.select([sock], [], [], 0.01)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        else:
            if sent >= total:  # all sent: end the body, as a server that reads it all needs
                sock.sendall(b'2\r\n"}\r\n0\r\n\r\n')
        status, answer = read_response(sock)
    assert status == 413 and answer["field"] == "body", answer
    assert answer["error"] == f"body over {LIMITS.max_body()} bytes"
    assert sent < total / 4


def test_a_silent_client_and_one_sending_its_headers_a_byte_at_a_time_are_cut_off(
    url: str,
) -> None:
    """Neither holds its connection beyond request_timeout (1 s here)."""
    with connect(url) as silent, connect(url) as slow:
        slow.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\n")
        waited_slow = closed_within(slow, 6, trickle=b"X-Slow: " + b"a" * 100)
        waited_silent = closed_within(silent, 6)
    assert waited_slow is not None and waited_slow < 4
    assert waited_silent is not None
    assert httpx.get(f"{url}/health").status_code == 200  # still serving


def test_a_body_that_does_not_arrive_in_time_is_answered_408(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(
            b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"text": '
        )
        started = time.monotonic()
        status, answer = read_response(sock)
    assert (status, answer["field"]) == (408, "body") and time.monotonic() - started < 5
    assert answer["error"] == "the body did not arrive within 1 s"


DEEP = b'{"text": ' + b"[" * 2000 + b"]" * 2000 + b"}"  # deeper than Python's recursion
API_ERRORS = [  # body, status, the whole error, field
    ({**GOOD, "bean": 3}, 422, '"bean": unknown field (did you mean "beam"?)', "bean"),
    (
        {**GOOD, "zzz": 1},
        422,
        '"zzz": unknown field (fields: text, texts, beam, nbest, alpha, attention)',
        "zzz",
    ),
    ({**GOOD, "nbest": 3, "beam": 2}, 422, "nbest: nbest 3 needs a beam of at least 3", "nbest"),
    ({**GOOD, "beam": 0}, 422, "beam: ", "beam"),
    ({**GOOD, "alpha": -1}, 422, "alpha: ", "alpha"),
    ({**GOOD, "beam": 7}, 422, "beam 7 is over this server's limit 6", "beam"),
    ({**GOOD, "nbest": 4, "beam": 6}, 422, "nbest 4 is over this server's limit 3", "nbest"),
    ({"texts": ["Ein Hund."] * 5}, 422, "5 texts; this server takes 1 to 4", "texts"),
    (
        {"text": "Ein Hund. " * 9},
        422,
        "text has 90 characters; this server takes at most 80",
        "text",
    ),
    (DEEP, 400, "There was an error parsing the body: ", "body"),
]


@pytest.mark.parametrize(("body", "status", "error", "field"), API_ERRORS)
def test_errors_speak_the_api_field_names(
    url: str, body: dict | bytes, status: int, error: str, field: str
) -> None:
    """Never a CLI option (`--beam`) or config key (`beam_size`, `decode.nbest`); an unknown
    field gets the closest one suggested, as config keys do."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(
        f"{url}/translate", content=content, headers={"Content-Type": "application/json"}
    )
    answer = response.json()
    assert (response.status_code, answer["field"]) == (status, field), answer
    assert answer["error"].startswith(error), answer
    assert not any(word in answer["error"] for word in ("--", "beam_size", "decode."))


def test_an_answer_too_large_is_refused_before_decoding(
    toy_translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """texts x nbest translations, and with attention a matrix of weights for each: over
    max_translations (6 here), or max_attention (2) with attention, is a 422 naming the
    fields, and nothing is decoded."""
    calls, translate_nbest = [], toy_translator.translate_nbest

    def counted(texts: list[str], decode: DecodeConfig):
        calls.append(len(texts))
        return translate_nbest(texts, decode)

    monkeypatch.setattr(toy_translator, "translate_nbest", counted)
    limits = LIMITS.model_copy(update={"max_translations": 6, "max_attention": 2})
    with serving(create_app(toy_translator, limits), limits) as base:
        calls.clear()  # the warm-up
        texts = ["Ein Hund.", "Zwei Männer.", "Eine Frau.", "Ein Kind."]
        refused = [
            ({"texts": texts, "beam": 2, "nbest": 2}, "nbest", "4 texts x nbest 2 = 8"),
            ({"texts": texts[:3], "attention": True}, "attention", "3 texts x nbest 1 = 3"),
        ]
        limits = ["over this server's limit 6", "over this server's limit 2 with attention"]
        for (body, field, count), limit in zip(refused, limits, strict=True):
            response = httpx.post(f"{base}/translate", json=body)
            assert response.status_code == 422
            assert response.json() == {"error": f"{count} translations, {limit}", "field": field}
        assert calls == []
        within = {"texts": texts[:2], "attention": True}
        assert httpx.post(f"{base}/translate", json=within, timeout=60).status_code == 200
    assert calls == [2]


def test_a_score_that_is_not_finite_is_sent_as_null(
    toy_translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON has no NaN or infinity: such a score is `null`, never left out."""
    translate_nbest = toy_translator.translate_nbest

    def not_finite(texts: list[str], decode: DecodeConfig):
        results = translate_nbest(texts, decode)
        for candidates in results:
            for candidate, score in zip(candidates, (math.nan, -math.inf), strict=False):
                candidate.score = score
        return results

    monkeypatch.setattr(toy_translator, "translate_nbest", not_finite)
    with serving(create_app(toy_translator, LIMITS), LIMITS) as base:
        body = {"text": "Ein Hund läuft.", "beam": 3, "nbest": 3, "attention": True}
        response = httpx.post(f"{base}/translate", json=body, timeout=60)
    assert response.status_code == 200
    (translation,) = response.json()["translations"]
    assert translation["score"] is None
    scores = [candidate["score"] for candidate in translation["nbest"]]
    assert scores[:2] == [None, None] and isinstance(scores[2], float)


def test_a_public_server_is_warned_about_shows_no_paths_and_loads_nothing_from_elsewhere(
    toy_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On every interface: one warning line on stderr; GET /info names the checkpoint by
    its file name only; no /docs or /redoc (their pages load scripts and fonts from CDNs);
    and a request path cannot forge a line of the request log."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    log = tmp_path / "server.log"
    process, base = start_server([toy_checkpoint], ["--host", "0.0.0.0"], log)
    try:
        base = base.replace("0.0.0.0", "127.0.0.1")
        info = httpx.get(f"{base}/info")
        assert info.json()["members"][0]["checkpoint"] == "best.pt"
        assert str(toy_checkpoint.parent) not in info.text
        assert [httpx.get(f"{base}{path}").status_code for path in ("/docs", "/redoc")] == [
            404,
            404,
        ]
        assert "/translate" in httpx.get(f"{base}/openapi.json").json()["paths"]
        forged = "2026-01-01 00:00:00,000 10.0.0.1 POST /translate 200 texts=1 batch=1 1.0ms"
        path = "/x%0a" + forged.replace(" ", "%20") + "%0d%e2%80%a8y"
        assert httpx.get(f"{base}{path}").status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    lines = log.read_text("utf-8").splitlines()
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0] and "reverse proxy" in warnings[0]
    assert not any(line.startswith("2026-01-01 00:00:00,000") for line in lines)
    (logged,) = [line for line in lines if "GET /x" in line]
    assert f"GET /x\\n{forged}\\r\\u2028y 404 " in logged


def test_tracebacks_in_the_log_cannot_pass_for_log_lines() -> None:
    formatter = LogFormatter("%(asctime)s %(message)s")
    try:
        raise ValueError("bad input\n2026-01-01 00:00:00,000 forged")
    except ValueError:
        record = logging.LogRecord(
            "seq2seq.serve", logging.ERROR, "", 0, "a\nb", (), sys.exc_info()
        )
    first, *rest = formatter.format(record).split("\n")
    assert first.endswith(" a\\nb")
    assert rest and all(line.startswith("    ") for line in rest)
    assert rest[-2:] == ["    ValueError: bad input", "    2026-01-01 00:00:00,000 forged"]


def test_shutdown_ends_within_the_grace_whatever_clients_do(
    toy_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients that send nothing, part of their headers, or part of their body (with a
    request timeout far beyond the grace, so only the grace can end them) do not hold up
    SIGTERM: the server exits within --grace (1 s) plus a margin."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    log = tmp_path / "server.log"
    options = ["--request-timeout", "600", "--grace", "1"]
    process, base = start_server([toy_checkpoint], options, log)
    clients = [connect(base) for _ in range(3)]
    try:
        clients[1].sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        clients[2].sendall(
            b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"text": '
        )
        time.sleep(0.5)  # the partial body is being read
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        assert time.monotonic() - signalled < 1 + 5
    finally:
        for client in clients:
            client.close()
        if process.poll() is None:
            process.kill()
    assert "Finished server process" in log.read_text()
