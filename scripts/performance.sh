#!/usr/bin/env bash
# Every table of docs/performance.md, measured in one sitting on this machine:
#
#   bash scripts/performance.sh MODEL [OUT]
#
# MODEL: a trained model of the tutorial configuration (configs/multi30k_de_en_tutorial.yaml;
# speed depends on its sizes and on how long its outputs are, not on its quality).
# OUT (default runs/performance): one log per command, and the memory pictures.
# Nothing else may run meanwhile: two torch processes on the same cores slow each other
# many times over. Each command is printed before it runs; each log holds its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1
out=${2:-runs/performance}
mkdir -p "$out"
data=data/multi30k
tutorial=configs/multi30k_de_en_tutorial.yaml

step() {  # step LOG COMMAND...: run it, its output in OUT/LOG
    echo "+ $*"
    "${@:2}" > "$out/$1" 2>&1
}

{
    lscpu | grep -E "Model name|^CPU\(s\)|Thread\(s\)|CPU family|^Model:"
    echo "matrix units: $(grep -m1 -owE 'avx2|avx512f|avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | xargs)"
    python -c "import torch, onnxruntime; print('torch', torch.__version__, '/ onnxruntime', onnxruntime.__version__)"
} > "$out/machine.txt"
zcat "$data/test_2016_flickr.de.gz" > "$out/test.de"

# Training and translation against the tutorial's computation, torch.
step benchmark.txt python scripts/benchmark.py --config "$tutorial" --data "$data" \
    --checkpoint "$model" --threads 2 --windows 3 --window-batches 5 --sentences 300 --repeats 3
# Translation on onnxruntime against torch and the tutorial loop; the CLI's start-up.
step onnx.txt python scripts/onnx_benchmark.py --model "$model" --data "$data" \
    --sentences 300 --repeats 3
# The server, torch and onnxruntime (an exported folder serves either).
rm -rf "$out/model-onnx"
step export.txt seq2seq export "$model" --output "$out/model-onnx" --onnx
step serve_torch.txt python scripts/load_test.py "$out/test.de" --model "$out/model-onnx" \
    --runtime torch --clients 1 8 64 --requests 10000 --max-seconds 60
step serve_onnx.txt python scripts/load_test.py "$out/test.de" --model "$out/model-onnx" \
    --runtime onnxruntime --clients 1 8 64 --requests 10000 --max-seconds 60
# The onnxruntime path as deployed: a virtual environment with the torch-free install
# (docs/translating.md), its server and one sentence through its command line.
rm -rf "$out/venv-onnx"
python -m venv "$out/venv-onnx"
"$out/venv-onnx/bin/pip" install --quiet -r requirements-onnxruntime.txt \
    -r requirements-onnxruntime-words.txt
"$out/venv-onnx/bin/pip" install --quiet --no-deps .
step serve_onnx_without_torch.txt "$out/venv-onnx/bin/python" scripts/load_test.py \
    "$out/test.de" --model "$out/model-onnx" --runtime onnxruntime --clients 1 8 64 \
    --requests 10000 --max-seconds 60
for _ in 1 2 3 4 5; do  # wall seconds, one line each
    /usr/bin/time -f "%e" bash -c "echo 'Ein Hund läuft im Park.' | \
        '$out/venv-onnx/bin/seq2seq' translate --model '$out/model-onnx' > /dev/null"
done 2> "$out/cli_without_torch.txt"
# Memory: a bounded training run that holds the epoch's largest batch (step 6 with the
# tutorial's seed), translation at batch 64, an ensemble's cost per member.
rm -rf "$out/run"
step memory_train.txt python scripts/memory.py --out "$out/memory_train.png" -- \
    seq2seq --verbose train --config "$tutorial" --set train.max_steps=20 \
    --set train.validate_every=10 --run-dir "$out/run"
for beam in 1 5; do
    step "memory_translate_beam$beam.txt" python scripts/memory.py \
        --out "$out/memory_translate_beam$beam.png" -- seq2seq --verbose translate \
        --model "$model" --input "$out/test.de" --batch-size 64 --beam "$beam" \
        --output "$out/beam$beam.en"
done
step ensemble.txt python scripts/ensemble_speed.py --config configs/multi30k_de_en.yaml \
    --members 4 --batch 64 --beam 5
echo "logs in $out"
