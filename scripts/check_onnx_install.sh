#!/usr/bin/env bash
# The torch-free install of the onnxruntime path, checked from scratch: export a model with
# ONNX graphs (with this environment's seq2seq, which has torch), install seq2seq into a
# fresh virtual environment as docs/translating.md says (requirements-onnxruntime.txt, then
# seq2seq itself with --no-deps), translate a sentence there, check that torch is not
# installed, and print the size of the environment's packages.
#
#     bash scripts/check_onnx_install.sh [MODEL]
#
# MODEL: a checkpoint or model folder (default: configs/toy.yaml trained for the check, a
# word model, so spaCy and sacremoses are exercised too). Run from anywhere, with the
# python that has seq2seq and torch first on PATH (or PYTHON=...).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

model="${1:-}"
if [[ -z "$model" ]]; then
    echo "training the toy model (configs/toy.yaml)" >&2
    (cd "$root" && "$python" -m seq2seq --quiet train --config configs/toy.yaml \
        --run-dir "$work/toy" --set data.dir=data/toy --set train.threads=1)
    model="$work/toy/best.pt"
fi
"$python" -m seq2seq --quiet export "$model" --output "$work/model" --onnx

"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --quiet --disable-pip-version-check)
"${pip[@]}" install -r "$root/requirements-onnxruntime.txt"
"${pip[@]}" install --no-deps "$root"

if "$work/venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "error: torch is installed in the fresh environment" >&2
    exit 1
fi
translation="$(cd "$work" && echo "Ein Hund läuft im Park." \
    | "$work/venv/bin/seq2seq" translate --model "$work/model")"
if [[ -z "$translation" ]]; then
    echo "error: no translation" >&2
    exit 1
fi
echo "translated without torch: $translation"
site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "installed size (du -sh of site-packages): $(du -sh "$site" | cut -f1)"
