#!/usr/bin/env bash
# The torch-free install of the onnxruntime path, checked from scratch, as
# docs/translating.md ("Without PyTorch") says to install it:
#   1. export, with this environment's seq2seq (which has torch), the shipped subword model
#      and the toy word model (configs/toy.yaml, trained here) with --onnx;
#   2. a fresh virtual environment: requirements-onnxruntime.txt, then seq2seq with
#      --no-deps; check that torch is absent, translate a sentence with the subword model,
#      print the size of the environment's packages;
#   3. add requirements-onnxruntime-words.txt (spaCy, sacremoses, sacreBLEU); translate with
#      the toy word model, score it with `evaluate`, print the size again.
#
#     bash scripts/check_onnx_install.sh
#
# Run from anywhere, with the python that has seq2seq and torch first on PATH (or
# PYTHON=...). Packages come from pip's configured index.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sentence="Ein Hund läuft im Park."

cd "$root"
echo "exporting the shipped model and training and exporting the toy model" >&2
"$python" -m seq2seq --quiet export models/multi30k-de-en-small --output "$work/subword" \
    --dtype float16 --onnx
"$python" -m seq2seq --quiet train --config configs/toy.yaml --run-dir "$work/toy" \
    --set data.dir=data/toy --set train.threads=1
"$python" -m seq2seq --quiet export "$work/toy/best.pt" --output "$work/words" --onnx

"$python" -m venv "$work/venv"
bin="$work/venv/bin"
install=("$bin/python" -m pip --quiet --disable-pip-version-check install --no-warn-conflicts)
site="$("$bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

check() {  # what: a translation that is not empty, and no torch
    if "$bin/python" -c "import torch" 2>/dev/null; then
        echo "error: torch is installed in the fresh environment" >&2
        exit 1
    fi
    if [[ -z "$2" ]]; then
        echo "error: $1: no translation" >&2
        exit 1
    fi
    echo "$1, without torch: $2 (site-packages: $(du -sh "$site" | cut -f1))"
}

"${install[@]}" -r requirements-onnxruntime.txt
"${install[@]}" --no-deps .
check "subword model" "$(echo "$sentence" | "$bin/seq2seq" translate --model "$work/subword")"

"${install[@]}" -r requirements-onnxruntime-words.txt
check "toy word model" "$(echo "$sentence" | "$bin/seq2seq" translate --model "$work/words")"
"$bin/seq2seq" evaluate --model "$work/words" --src data/toy/test.de --ref data/toy/test.en \
    | grep "^BLEU"
