"""Load test for `seq2seq serve`, on this machine only (loopback).

    python scripts/load_test.py data/multi30k/test_2016_flickr.de.gz \\
        --model runs/multi30k_de_en/best.pt --clients 1 8 64 --requests 2000 --max-seconds 60

Starts the server on a free port (or uses --url, a server on this machine), then for each
client count sends single sentences of the source file from that many concurrent clients
(threads, each with one keep-alive connection), up to --requests requests or --max-seconds
per client count. Reports requests/s, sentences/s, p50/p99 latency, errors and the
server's peak RSS (VmHWM, only for a server it started), then the same sentences
translated offline in batches of 64 with the same settings, for comparison.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from seq2seq.corpus import read_lines

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def start_server(
    models: list[Path], options: list[str], log: Path, timeout: float = 300
) -> tuple[subprocess.Popen, str]:
    """`seq2seq serve` on a free port, its stderr into `log` -> (process, base URL), once
    it answers GET /health."""
    command = [sys.executable, "-m", "seq2seq", "serve", "--port", "0", *options]
    command += [argument for model in models for argument in ("--model", str(model))]
    with open(log, "wb") as sink:  # the child keeps its own handle
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text("utf-8", errors="replace").splitlines()
        url = next((line.split()[-1] for line in lines if line.startswith("serving on ")), None)
        if url is not None and get(url, "/health", timeout) == 200:
            return process, url
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {lines[-3:]}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not start within {timeout} s")


def get(url: str, path: str, timeout: float) -> int:
    """The status of GET url+path (0 if nothing answered)."""
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def load(url: str, sentences: list[str], clients: int, requests: int, seconds: float) -> dict:
    """`clients` threads send single sentences until `requests` were sent or time is up."""
    numbers, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []  # of the answered requests
    errors = 0
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=seconds + 60)
        while time.monotonic() < deadline and (number := next(numbers)) < requests:
            body = json.dumps({"text": sentences[number % len(sentences)]})
            started = time.perf_counter()
            try:
                connection.request("POST", "/translate", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()  # reconnects at the next request
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    done = len(latencies)
    return {
        "clients": clients,
        "requests": done + errors,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_s": round((done + errors) / elapsed, 2),
        "sentences_per_s": round(done / elapsed, 2),  # one sentence per request
        "p50_ms": round(1000 * latencies[done // 2], 1) if done else None,
        "p99_ms": round(1000 * latencies[min(done - 1, done * 99 // 100)], 1) if done else None,
    }


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident set size (VmHWM) of a process on Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return round(int(line.split()[1]) / 1024, 1) if line else None


def offline(
    models: list[Path], sentences: list[str], device: str, precision: str | None, runtime: str
) -> dict:
    """The same sentences through Translator.translate in batches of 64 with the server's
    default decoding settings: as `translate` batches a file (sorted by length, so a
    batch's sentences end at about the same step), and 64 at a time in the order sent
    (the mix of lengths a server's batch gets)."""
    from seq2seq.translation import open_translator

    translator = open_translator(models, device, runtime, precision)
    decode = translator.decode.updated(batch_size=64, precision=precision)
    translator.translate(sentences[:64], decode)  # warm-up
    started = time.perf_counter()
    translator.translate(sentences, decode)
    sorted_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for first in range(0, len(sentences), 64):
        translator.translate(sentences[first : first + 64], decode)
    in_order_seconds = time.perf_counter() - started
    return {
        "sentences": len(sentences),
        "sentences_per_s": round(len(sentences) / sorted_seconds, 2),
        "in_order_sentences_per_s": round(len(sentences) / in_order_seconds, 2),
    }


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="sentences to send, one per line (.gz too)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--model", type=Path, action="append", help="start a server (repeat: ensemble)"
    )
    where.add_argument("--url", help="a running server on this machine, e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=1000, help="per client count")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per client count")
    parser.add_argument("--device", default="auto", help="the server's and the offline run's")
    parser.add_argument(
        "--serve-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="passed to seq2seq serve, e.g. --serve-option=--max-batch=32",
    )
    parser.add_argument(
        "--precision", choices=["fp32", "bf16", "int8"], help="the server's and the offline run's"
    )
    parser.add_argument(
        "--runtime",
        choices=["auto", "onnxruntime", "torch"],
        default="auto",
        help="the server's and the offline run's (a folder exported with --onnx: onnxruntime)",
    )
    parser.add_argument(
        "--no-offline", dest="offline", action="store_false", help="skip the offline comparison"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.url and urlsplit(args.url).hostname not in LOOPBACK:
        parser.error(f"--url must be on this machine ({', '.join(LOOPBACK[:3])}), not {args.url}")
    if min(args.clients) < 1 or args.requests < 1 or args.max_seconds <= 0:
        parser.error("--clients, --requests and --max-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    sentences = [line for line in read_lines(args.source) if line.strip()]
    process, url = None, args.url
    with tempfile.TemporaryDirectory() as folder:
        if args.model:
            options = ["--device", args.device, "--runtime", args.runtime, *args.serve_option]
            if args.precision:
                options += ["--precision", args.precision]
            process, url = start_server(args.model, options, Path(folder) / "server.log")
        try:
            runs = [
                {
                    **load(url, sentences, clients, args.requests, args.max_seconds),
                    "server_peak_rss_mb": peak_rss_mb(process.pid) if process else None,
                }
                for clients in args.clients
            ]
        finally:
            if process:
                process.terminate()
                process.wait(60)
    report: dict = {"url": url, "runs": runs}
    if args.model and args.offline:
        sent = sentences[: max(run["requests"] for run in runs)]
        report["offline_batch_64"] = offline(
            args.model, sent, args.device, args.precision, args.runtime
        )
    print(json.dumps(report) if args.json else table(report))
    return report


def table(report: dict) -> str:
    header = "clients  requests  errors   req/s  sent/s  p50 ms  p99 ms  server peak RSS MB"
    rows = [
        f"{r['clients']:>7}  {r['requests']:>8}  {r['errors']:>6}  {r['requests_per_s']:>6}  "
        f"{r['sentences_per_s']:>6}  {r['p50_ms']!s:>6}  {r['p99_ms']!s:>6}  "
        f"{r['server_peak_rss_mb']!s:>18}"
        for r in report["runs"]
    ]
    if "offline_batch_64" in report:
        offline_run = report["offline_batch_64"]
        rows.append(
            f"offline, batch 64: {offline_run['sentences_per_s']} sentences/s sorted by "
            f"length, {offline_run['in_order_sentences_per_s']} in the order sent "
            f"({offline_run['sentences']} sentences)"
        )
    return "\n".join([f"server: {report['url']}", header, *rows])


if __name__ == "__main__":
    main()
