#!/usr/bin/env bash
# The wheel works on its own: build it, install it in a fresh virtual environment, and from
# a folder outside the source tree train the toy config for a few steps, translate, serve,
# and fetch the page at / (with every file it links to), /info and a translation.
#
#   bash scripts/check_wheel.sh      (.ci/run calls it; about two minutes, most of it pip)
#
# The wheel is built from a copy of pyproject.toml, README.md and seq2seq/, so that nothing
# left in the checkout's build/ can slip into it. pip's cache is reused; torch is pinned as
# in .ci/run, so pip takes the local CPU wheel.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/source"
cp -R "$root/pyproject.toml" "$root/README.md" "$root/seq2seq" "$work/source/"
find "$work/source" -name __pycache__ -prune -exec rm -rf {} +
python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/source"
wheel="$(echo "$work"/dist/seq2seq-*.whl)"
version="$(basename "$wheel" | cut -d- -f2)"

python3 -m venv "$work/venv"
bin="$work/venv/bin"
"$bin/python" -m pip install --quiet torch==2.13.0
"$bin/python" -m pip install --quiet "$wheel"

cd "$work"  # the source tree is not on the path: only the installed package can run
mkdir data
cp -R "$root/data/toy" data/toy
cp "$root/configs/toy.yaml" toy.yaml  # data/toy and runs/toy, relative to this folder
where="$("$bin/python" -c 'import seq2seq; print(seq2seq.__file__)')"
case "$where" in
    "$work/venv/"*) ;;
    *) echo "check_wheel: seq2seq was imported from $where, not from the wheel" >&2; exit 1 ;;
esac
said="$("$bin/seq2seq" --version)"
case "$said" in
    "seq2seq $version "*) ;;
    *) echo "check_wheel: --version says '$said', the wheel is $version" >&2; exit 1 ;;
esac

"$bin/seq2seq" --quiet train --config toy.yaml --set train.max_steps=10
lines="$(printf 'Ein Hund läuft.\nZwei Männer spielen Fußball.\n' \
    | "$bin/seq2seq" translate --model runs/toy/best.pt | wc -l)"
[ "$lines" -eq 2 ] || { echo "check_wheel: translate gave $lines lines for 2" >&2; exit 1; }

"$bin/seq2seq" serve --model runs/toy/best.pt --port 0 2>serve.log &
server=$!
"$bin/python" - serve.log <<'EOF'
"""Wait for the server's address, then fetch /, each file of the server that the page
links to, /info and one translation; an error status fails."""
import json
import re
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin

deadline, url = time.monotonic() + 120, None
while url is None:
    log = open(sys.argv[1], encoding="utf-8").read()
    if time.monotonic() > deadline:
        sys.exit(f"check_wheel: the server did not start:\n{log}")
    found = re.search(r"^serving on (\S+)$", log, re.MULTILINE)
    url = found and found.group(1)
    time.sleep(0.2)


def fetch(path: str, body: dict | None = None) -> bytes:
    """The answer to GET path, or to POST path with a JSON body (the socket is listening
    before the address is printed: a request waits for the app to start)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        sys.exit(f"check_wheel: {path}: {error.code} {error.read()[:500]!r}")


page = fetch("/").decode("utf-8")
assert "<html" in page.lower(), page[:200]
links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page)
local = {
    urljoin("/", link).split("#")[0]
    for link in links
    if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:|//|#", link)  # another site, data:, a fragment
} - {"/"}
for path in sorted(local):
    fetch(path)
fetch("/info")
answer = json.loads(fetch("/translate", {"text": "Ein Hund läuft."}))
assert len(answer["translations"]) == 1, answer
print(f"check_wheel: /, its {len(local)} linked files, /info and /translate answered")
EOF
kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
[ "$status" -eq 143 ] || { echo "check_wheel: serve exited with $status after SIGTERM" >&2; exit 1; }
echo "check_wheel: $(basename "$wheel") installs, trains, translates and serves its page"
