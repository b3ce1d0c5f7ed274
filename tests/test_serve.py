"""The server: the batcher alone (with a stand-in decoder), the API through FastAPI's
TestClient on the toy model (answers equal the Translator's on each text alone, every bad
request a JSON 4xx naming the field and the server still serving), and a real
`seq2seq serve` process: concurrent clients batched, graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, TOY_DATA
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from load_test import start_server

from seq2seq.batching import Batcher
from seq2seq.config import DecodeConfig, ServeLimits
from seq2seq.corpus import read_lines
from seq2seq.errors import UserError
from seq2seq.serve import create_app, listen
from seq2seq.translator import Translator

SOURCES = read_lines(TOY_DATA / "test.de")
LIMITS = ServeLimits(max_chars=80, max_texts=4, max_beam=6, max_nbest=3, max_wait_ms=1.0)
SETTINGS = [{}, {"beam": 1}, {"beam": 3, "nbest": 2, "alpha": 1.0}]
# A batcher that never answers fails its test after this many seconds instead of hanging
# it (scripts/mutation.sh meets many such batchers).
NO_ANSWER = 10.0


def run_batcher(batcher: Batcher, requests: list[tuple[list[str], DecodeConfig]], gap: float = 0):
    """Send the requests (`gap` seconds apart) -> their results or exceptions."""

    async def send_all() -> list:
        batcher.start()
        try:
            sent = []
            for texts, decode in requests:
                sent.append(asyncio.ensure_future(batcher.translate(texts, decode)))
                await asyncio.sleep(gap)
            return await asyncio.gather(*sent, return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(asyncio.wait_for(send_all(), NO_ANSWER))


def stand_in(calls: list[tuple[list[str], DecodeConfig]]):
    """A decoder that records its calls, answers `text:beam` and fails on "bad"."""

    def translate(texts: list[str], decode: DecodeConfig) -> list[list[str]]:
        calls.append((list(texts), decode))
        if any("bad" in text for text in texts):
            raise ValueError("cannot translate bad")
        return [[f"{text}:{decode.beam_size}"] for text in texts]

    return translate


def test_concurrent_requests_share_one_decoder_call() -> None:
    calls, decode = [], DecodeConfig()
    sizes = [1, 2, 1, 3, 1]
    requests = [([f"s{i}.{j}" for j in range(size)], decode) for i, size in enumerate(sizes)]
    results = run_batcher(Batcher(stand_in(calls), 64, 0.2), requests)
    assert [texts for texts, _ in calls] == [[t for texts, _ in requests for t in texts]]
    for (texts, _), result in zip(requests, results, strict=True):
        assert result.candidates == [[f"{text}:5"] for text in texts]
        assert result.batch_size == sum(sizes)


def test_a_batch_holds_at_most_max_batch_sentences_and_never_splits_a_request() -> None:
    calls, decode = [], DecodeConfig()
    requests = [([f"s{i}"] * size, decode) for i, size in enumerate([2, 3, 1, 1, 5])]
    run_batcher(Batcher(stand_in(calls), 4, 0.2), requests)
    assert [len(texts) for texts, _ in calls] == [2, 4, 1, 5]


def test_requests_are_batched_with_those_of_the_same_settings() -> None:
    calls, greedy, beam = [], DecodeConfig(beam_size=1), DecodeConfig(beam_size=3)
    requests = [(["a"], greedy), (["b"], beam), (["c"], greedy), (["d"], beam)]
    results = run_batcher(Batcher(stand_in(calls), 64, 0.2), requests)
    assert calls == [(["a", "c"], greedy), (["b", "d"], beam)]
    assert [r.candidates for r in results] == [[["a:1"]], [["b:3"]], [["c:1"]], [["d:3"]]]


def test_a_failing_request_fails_alone() -> None:
    calls, decode = [], DecodeConfig()
    requests = [(["a"], decode), (["bad"], decode), (["c", "d"], decode)]
    first, failed, third = run_batcher(Batcher(stand_in(calls), 64, 0.2), requests)
    assert isinstance(failed, ValueError)
    assert first.candidates == [["a:5"]] and third.candidates == [["c:5"], ["d:5"]]
    assert [texts for texts, _ in calls] == [["a", "bad", "c", "d"], ["a"], ["bad"], ["c", "d"]]


def test_a_request_after_the_wait_starts_the_next_batch() -> None:
    calls, decode = [], DecodeConfig()
    run_batcher(Batcher(stand_in(calls), 64, 0.02), [(["a"], decode), (["b"], decode)], gap=0.25)
    assert [texts for texts, _ in calls] == [["a"], ["b"]]


def test_stop_waits_for_the_decode_in_flight_and_leaves_no_task_or_thread() -> None:
    """The server stops the batcher last: when stop() returns, a decoder call still running
    for a client that went away has finished, and the worker task and the decoder thread
    are gone. A batcher that never started stops as well."""
    entered, finished = threading.Event(), []

    def slow(texts: list[str], decode: DecodeConfig) -> list[list[str]]:
        entered.set()
        time.sleep(0.5)
        finished.append(texts)
        return [[text] for text in texts]

    async def run() -> None:
        await Batcher(slow, 64, 0.0).stop()
        threads, tasks = set(threading.enumerate()), asyncio.all_tasks()
        batcher = Batcher(slow, 64, 0.0)
        batcher.start()
        request = asyncio.ensure_future(batcher.translate(["a"], DecodeConfig()))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        request.cancel()
        await batcher.stop()
        assert finished == [["a"]]
        assert asyncio.all_tasks() == tasks
        assert not set(threading.enumerate()) - threads

    asyncio.run(asyncio.wait_for(run(), NO_ANSWER))


def closed_loop(batcher: Batcher, returns: list[float | None]) -> list[float]:
    """Clients that each send one sentence, all at once, then, once answered, wait their
    `returns` seconds and send another (None: they do not) -> when the second ones were sent."""
    sent_again: list[float] = []

    async def client(name: str, pause: float | None) -> None:
        await batcher.translate([name], DecodeConfig())
        if pause is not None:
            await asyncio.sleep(pause)
            sent_again.append(time.perf_counter())
            await batcher.translate([name + "'"], DecodeConfig())

    async def run_all() -> None:
        batcher.start()
        try:
            await asyncio.gather(*(client(f"c{i}", pause) for i, pause in enumerate(returns)))
        finally:
            await batcher.stop()

    asyncio.run(asyncio.wait_for(run_all(), NO_ANSWER))
    return sent_again


def slow_stand_in(calls: list[tuple[list[str], float]], seconds: float):
    """A decoder taking `seconds` per call, recording (texts, when it was called)."""

    def translate(texts: list[str], decode: DecodeConfig) -> list[list[str]]:
        calls.append((list(texts), time.perf_counter()))
        time.sleep(seconds)
        return [[text] for text in texts]

    return translate


def test_a_full_batch_is_decoded_at_once() -> None:
    """max_batch 2 and max_wait 1 s: two requests sent together are decoded together at
    once, without waiting out max_wait for a third that could not fit."""
    calls, decode = [], DecodeConfig()
    sent = time.perf_counter()
    run_batcher(Batcher(slow_stand_in(calls, 0.0), 2, 1.0), [(["a"], decode), (["b"], decode)])
    assert [texts for texts, _ in calls] == [["a", "b"]]
    assert calls[0][1] - sent < 0.9  # waiting out max_wait would take 1 s


def test_clients_coming_back_after_their_answer_are_waited_for_and_batched_again() -> None:
    calls = []  # the second requests come 30 and 80 ms after the answer; max_wait is 10 ms
    closed_loop(Batcher(slow_stand_in(calls, 0.4), 64, 0.01), [0.03, 0.08])
    assert [texts for texts, _ in calls] == [["c0", "c1"], ["c0'", "c1'"]]


def test_a_lone_client_is_not_held_waiting_for_others() -> None:
    calls = []  # its own earlier request is the only one the last batch answered
    (sent,) = closed_loop(Batcher(slow_stand_in(calls, 0.4), 64, 0.01), [0.0])
    assert [texts for texts, _ in calls] == [["c0"], ["c0'"]]
    assert calls[1][1] - sent < 0.09  # max_wait (0.01), not a quarter of 0.4 (0.1)


def test_the_wait_for_coming_back_clients_is_a_quarter_of_the_last_decoding_time() -> None:
    calls = []  # c1 does not come back: c0' waits for it 0.1 s (a quarter of 0.4), not more
    (sent,) = closed_loop(Batcher(slow_stand_in(calls, 0.4), 64, 0.01), [0.0, None])
    assert [texts for texts, _ in calls] == [["c0", "c1"], ["c0'"]]
    assert 0.099 < calls[1][1] - sent < 0.3  # a fifth (0.08) would be too short


@pytest.fixture
def client(toy_translator: Translator):
    with TestClient(create_app(toy_translator, LIMITS, ["toy.pt"])) as client:
        yield client


def assert_answers_alone(translator: Translator, text: str, settings: dict, answer: dict) -> None:
    """The answer for `text` is what the Translator gives for it alone."""
    changes = {"beam_size": settings.get("beam"), "nbest": settings.get("nbest")}
    decode = translator.decode.updated(**changes, alpha=settings.get("alpha"))
    (alone,) = translator.translate_nbest([text], decode)
    candidates = answer["nbest"] if decode.nbest > 1 else [answer]
    assert [c["translation"] for c in candidates] == [t.text for t in alone]
    assert [c["tokens"] for c in candidates] == [t.tokens for t in alone]
    assert [c["score"] for c in candidates] == pytest.approx([t.score for t in alone], abs=1e-3)
    assert answer["source_tokens"] == alone[0].source_tokens


@pytest.mark.parametrize("settings", SETTINGS)
def test_texts_are_translated_as_the_translator_translates_each_alone(
    client: TestClient, toy_translator: Translator, settings: dict
) -> None:
    texts = SOURCES[3:6]
    response = client.post("/translate", json={"texts": texts, "attention": True, **settings})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert len(answer["translations"]) == len(texts)
    for text, translation in zip(texts, answer["translations"], strict=True):
        assert_answers_alone(toy_translator, text, settings, translation)
        attention = translation["attention"]
        assert attention["source"] == ["<sos>", *translation["source_tokens"], "<eos>"]
        assert attention["target"] == [*translation["tokens"], "<eos>"]
        assert len(attention["weights"]) == len(attention["target"])
        for row in attention["weights"]:
            assert len(row) == len(attention["source"]) and sum(row) == pytest.approx(1, abs=1e-3)
    decode = toy_translator.decode
    assert answer["beam"] == settings.get("beam", decode.beam_size)
    assert answer["nbest"] == settings.get("nbest", decode.nbest)


def test_one_text_with_the_defaults(client: TestClient, toy_translator: Translator) -> None:
    answer = client.post("/translate", json={"text": SOURCES[0]}).json()
    (translation,) = answer["translations"]
    assert_answers_alone(toy_translator, SOURCES[0], {}, translation)
    assert "attention" not in translation and "nbest" not in translation
    assert translation["truncated"] is False


def test_truncated_says_whether_the_text_was_longer_than_max_source_length(
    toy_translator: Translator,
) -> None:
    """A model whose decode.max_source_length is 4: a text of 4 tokens is whole, one of 5
    is translated from its first 4 and says so."""
    decode = toy_translator.decode.updated(max_source_length=4)
    short = Translator(toy_translator.models, toy_translator.src, toy_translator.trg, decode,
                       toy_translator.device, frozen=True)  # fmt: skip
    texts = ["Ein Hund läuft .", "Ein Hund läuft schnell ."]
    assert [len(tokens) for tokens in short.src.tokenize(texts)] == [4, 5]
    with TestClient(create_app(short, LIMITS)) as client:
        answer = client.post("/translate", json={"texts": texts}).json()
    whole, cut = answer["translations"]
    assert (whole["truncated"], cut["truncated"]) == (False, True)
    assert cut["source_tokens"] == ["Ein", "Hund", "läuft", "schnell"]


def test_concurrent_requests_are_batched_and_a_failure_fails_only_its_request(
    toy_translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes, translate_nbest = [], toy_translator.translate_nbest

    def failing_on_kaputt(lines: list[str], decode: DecodeConfig):
        sizes.append(len(lines))
        if "Kaputt." in lines:
            raise RuntimeError("a decoder failure")
        return translate_nbest(lines, decode)

    monkeypatch.setattr(toy_translator, "translate_nbest", failing_on_kaputt)
    texts = [*SOURCES[:7], "Kaputt."]
    barrier = threading.Barrier(len(texts))
    limits = ServeLimits(max_wait_ms=2000, max_batch=8)
    with TestClient(create_app(toy_translator, limits)) as client:

        def send(text: str) -> httpx.Response:
            barrier.wait()
            return client.post("/translate", json={"text": text, "beam": 2})

        with ThreadPoolExecutor(len(texts)) as pool:
            responses = list(pool.map(send, texts))
    monkeypatch.undo()
    assert sizes[0] == len(texts)  # all in one batch, then one by one
    assert responses[-1].status_code == 500
    assert responses[-1].json() == {
        "error": "translation failed: a decoder failure",
        "field": "text",
    }
    for text, response in zip(texts[:-1], responses[:-1], strict=True):
        assert response.status_code == 200
        assert_answers_alone(toy_translator, text, {"beam": 2}, response.json()["translations"][0])


JSON = {"Content-Type": "application/json"}
GOOD = {"text": SOURCES[1]}
BAD_REQUESTS = [  # body, status, field
    (b'{"text": "Ein Hund', 400, "body"),
    (b"", 400, "body"),
    (b"[1, 2]", 400, "body"),
    (b'"Ein Hund."', 400, "body"),
    (b"\xff\xfe", 400, "body"),
    ({}, 422, "text"),
    ({"text": "Ein Hund.", "texts": ["Ein Hund."]}, 422, "text"),
    ({"text": 5}, 422, "text"),
    ({"text": None}, 422, "text"),
    ({"text": ""}, 422, "text"),
    ({"text": " \t\n"}, 422, "text"),
    ({"text": "Ein Hund. " * 9}, 422, "text"),  # 90 characters, over max_chars 80
    ({"text": "Ein Hund \ud800."}, 422, "text"),
    ({"texts": []}, 422, "texts"),
    ({"texts": ["Ein Hund."] * 5}, 422, "texts"),
    ({"texts": ["Ein Hund.", ""]}, 422, "texts"),
    ({"texts": ["Ein Hund.", 3]}, 422, "texts"),
    ({"texts": "Ein Hund."}, 422, "texts"),
    ({**GOOD, "beam": 0}, 422, "beam"),
    ({**GOOD, "beam": -3}, 422, "beam"),
    ({**GOOD, "beam": 7}, 422, "beam"),  # over max_beam 6
    ({**GOOD, "beam": "3"}, 422, "beam"),
    ({**GOOD, "beam": 2.5}, 422, "beam"),
    ({**GOOD, "beam": True}, 422, "beam"),
    ({**GOOD, "nbest": 0}, 422, "nbest"),
    ({**GOOD, "nbest": 4, "beam": 6}, 422, "nbest"),  # over max_nbest 3
    ({**GOOD, "nbest": 3, "beam": 2}, 422, "nbest"),  # nbest > beam
    ({**GOOD, "alpha": -0.5}, 422, "alpha"),
    ({**GOOD, "alpha": "high"}, 422, "alpha"),
    (b'{"text": "Ein Hund.", "alpha": NaN}', 422, "alpha"),
    (b'{"text": "Ein Hund.", "alpha": Infinity}', 422, "alpha"),
    ({**GOOD, "attention": "yes"}, 422, "attention"),
    ({**GOOD, "language": "fr"}, 422, "language"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_REQUESTS)
def test_a_bad_request_is_a_json_error_naming_the_field(
    client: TestClient, body: dict | bytes, status: int, field: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/translate", content=content, headers=JSON)
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"error", "field"} and answer["field"] == field
    assert "Traceback" not in answer["error"] and "\n" not in answer["error"]
    assert client.post("/translate", json=GOOD).status_code == 200  # still serving


def test_errors_name_the_setting_and_the_limit(client: TestClient) -> None:
    def error(body: dict) -> str:
        return client.post("/translate", json=body).json()["error"]

    assert "nbest" in error({**GOOD, "nbest": 3, "beam": 2}) and "beam" in error(
        {**GOOD, "beam": 0}
    )
    assert error({**GOOD, "beam": 7}) == "beam 7 is over this server's limit 6"
    assert error({"texts": ["Ein Hund.", ""]}) == "texts[1] is empty"
    assert error({"texts": ["Ein Hund.", 3]}).startswith("texts[1]: ")


def test_a_body_over_the_limit_is_refused_unread(client: TestClient) -> None:
    body = json.dumps({"text": "x" * (LIMITS.max_body() + 1)})
    response = client.post("/translate", content=body, headers=JSON)
    assert response.status_code == 413 and response.json()["field"] == "body"


def test_unknown_paths_and_methods_answer_json(client: TestClient) -> None:
    assert client.get("/nowhere").json() == {"error": "Not Found", "field": None}
    assert client.get("/translate").status_code == 405
    assert client.get("/translate").json()["field"] is None


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 9) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
FIELDS = st.sampled_from(["text", "texts", "beam", "nbest", "alpha", "attention", "x"])


@given(body=st.dictionaries(FIELDS, JSON_VALUES | st.sampled_from(SOURCES[:3]), max_size=5))
def test_any_json_object_is_answered_without_a_server_error(client: TestClient, body) -> None:
    response = client.post("/translate", content=json.dumps(body).encode(), headers=JSON)
    assert response.status_code in (200, 400, 422), response.text
    answer = response.json()
    if response.status_code == 200:
        assert len(answer["translations"]) == (1 if "text" in body else len(body["texts"]))
    else:
        assert set(answer) == {"error", "field"} and answer["field"] in (*body, "text", "body")


def test_health_info_page_and_openapi(client: TestClient, toy_translator: Translator) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    (model,) = toy_translator.models
    parameters = sum(p.numel() for p in model.parameters())
    assert info["members"] == [
        {"checkpoint": "toy.pt", "parameters": parameters, "model": model.config.model_dump()}
    ]
    assert info["parameters"] == parameters
    assert info["name"] == "toy.pt" and info["languages"] == {"source": "de", "target": "en"}
    assert info["vocabulary"] == {
        "source": len(toy_translator.src.vocab),
        "target": len(toy_translator.trg.vocab),
    }
    assert info["decode"]["beam_size"] == toy_translator.decode.beam_size
    assert info["limits"]["max_beam"] == LIMITS.max_beam
    assert info["versions"]["torch"] and info["versions"]["fastapi"]
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="heatmap"' in page.text
    assert "://" not in page.text and "<script src" not in page.text  # nothing from elsewhere
    assert "/translate" in client.get("/openapi.json").json()["paths"]


def test_the_server_warms_up_with_a_full_batch_at_start(
    toy_translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, translate = [], toy_translator.translate_nbest

    def recorded(texts: list[str], decode: DecodeConfig):
        calls.append((len(texts), decode.batch_size))
        return translate(texts, decode)

    monkeypatch.setattr(toy_translator, "translate_nbest", recorded)
    create_app(toy_translator, LIMITS)
    assert calls == [(LIMITS.max_batch, LIMITS.max_batch)]


def test_default_settings_over_the_limits_are_refused(toy_translator: Translator) -> None:
    with pytest.raises(UserError, match="beam 5 is over this server's limit 2"):
        create_app(toy_translator, ServeLimits(max_beam=2))


def test_connections_to_the_listening_socket_send_without_delay() -> None:
    """asyncio (and so uvicorn) turns Nagle's algorithm off on the connections of the
    socket `listen` makes; with it on, kept-alive requests waited 40 ms each."""
    nodelay = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            connection = transport.get_extra_info("socket")
            nodelay.append(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def connect_once() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
            while not nodelay:
                await asyncio.sleep(0.01)
            writer.close()

    with listen("127.0.0.1", 0) as listening:
        asyncio.run(asyncio.wait_for(connect_once(), 10))
    assert nodelay == [1]


def test_serve_command_errors_are_one_line(cli, toy_checkpoint: Path, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        cases = [
            (tmp_path / "missing.pt", "0", "error: " + str(tmp_path / "missing.pt")),
            (toy_checkpoint, "70000", "error: cannot listen on 127.0.0.1 port 70000"),
            (toy_checkpoint, port, f"error: cannot listen on 127.0.0.1 port {port}"),
        ]
        for model, port, message in cases:
            code, out, err = cli("serve", "--model", model, "--port", port)
            assert (code, out) == (2, "") and err.startswith(message) and err.count("\n") == 1


def test_the_serve_options_are_the_limits_of_the_server() -> None:
    """`seq2seq serve --help` shows each limit's default and description, as ServeLimits
    (the one place that says them) has them."""
    import typer.main

    from seq2seq.cli import app

    serve = typer.main.get_command(app).commands["serve"]
    options = {param.name: param for param in serve.params}
    for name, field in ServeLimits.model_fields.items():
        option = options[name]
        assert (option.default, option.help) == (field.default, field.description), name


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--max-batch", "0", "Input should be greater than or equal to 1"),
        ("--request-timeout", "0", "Input should be greater than or equal to 0.1"),
        ("--grace", "nan", "Input should be a finite number"),
    ],
)
def test_a_limit_out_of_range_names_its_option(cli, option: str, value: str, reason: str):
    code, out, err = cli("serve", "--model", "missing.pt", option, value)
    assert (code, out, err) == (2, "", f"error: {option}: {reason}\n")


def test_the_command_line_does_not_load_the_server() -> None:
    """`seq2seq --help` stays fast: FastAPI and uvicorn load only for `serve`."""
    code = "import sys, seq2seq.cli; print(sorted({'fastapi', 'uvicorn'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_a_real_server_batches_concurrent_clients_and_stops_gracefully(
    toy_checkpoint: Path, toy_translator: Translator, tmp_path: Path, monkeypatch
) -> None:
    """16 clients at once get what each sentence gives alone; then a request in flight
    when SIGTERM arrives is still answered before the server exits."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    log = tmp_path / "server.log"
    options = ["--max-batch", "8", "--max-wait-ms", "1000"]  # a lone request waits 1 s
    process, url = start_server([toy_checkpoint], options, log)
    try:
        requests = [(SOURCES[i], SETTINGS[i % len(SETTINGS)]) for i in range(16)]
        barrier = threading.Barrier(len(requests))

        def send(request: tuple[str, dict]) -> tuple[httpx.Response, float]:
            barrier.wait()
            text, settings = request
            response = httpx.post(f"{url}/translate", json={"text": text, **settings}, timeout=60)
            return response, time.monotonic()

        with ThreadPoolExecutor(len(requests)) as pool:
            answers = [response for response, _ in pool.map(send, requests)]
        for (text, settings), response in zip(requests, answers, strict=True):
            assert response.status_code == 200
            assert_answers_alone(toy_translator, text, settings, response.json()["translations"][0])
        batches = [int(size) for size in re.findall(r" batch=(\d+) ", log.read_text())]
        assert len(batches) == len(requests) and max(batches) > 1

        barrier = threading.Barrier(1)  # `send` alone now
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(send, (SOURCES[20], {}))
            time.sleep(0.3)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            response, answered = in_flight.result()
        assert response.status_code == 200 and answered > signalled
        assert process.wait(60) == 128 + signal.SIGTERM  # as every command stopped by it
        assert "Application shutdown complete" in log.read_text()
        assert "warning:" not in log.read_text()  # only a public address is warned about
    finally:
        if process.poll() is None:
            process.kill()
