#!/usr/bin/env bash
# CUDA checks: one epoch of the tutorial config on one GPU in fp32, bf16 and fp16 (with
# the gradient scaler), training tokens/s from metrics.jsonl, then evaluate, translate
# and an interrupted-and-resumed run on the GPU.
# Usage: bash scripts/gpu_check.sh DATA_DIR
set -u
cd "$(dirname "$0")/.."
DATA=${1:?usage: gpu_check.sh DATA_DIR}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
CONFIG="--config configs/multi30k_de_en_tutorial.yaml --set data.dir=$DATA --set train.device=cuda"
rate() {  # median training target tokens/s over the logged windows after the first
  python3 - "$1" <<'PY'
import json, statistics, sys
rates = [r["tokens_per_s"] for r in map(json.loads, open(sys.argv[1] + "/metrics.jsonl")) if r["kind"] == "train"]
valid = [r for r in map(json.loads, open(sys.argv[1] + "/metrics.jsonl")) if r["kind"] == "valid"][-1]
print(f"{sys.argv[1]}: {statistics.median(rates[1:]):.0f} target tokens/s (median of {len(rates) - 1} windows); "
      f"epoch training time {valid['elapsed']:.1f} s; valid BLEU {valid['bleu']:.2f} ppl {valid['perplexity']:.2f}")
PY
}
for precision in fp32 bf16 fp16; do
  python3 -m seq2seq train $CONFIG --run-dir /tmp/gpu_$precision --set train.precision=$precision \
    --set train.log_every=20 > /tmp/gpu_$precision.log 2>&1 --set train.epochs=1 \
    || { tail -20 /tmp/gpu_$precision.log; exit 1; }
  rate /tmp/gpu_$precision
done
zcat "$DATA/test_2016_flickr.de.gz" > /tmp/test.de
zcat "$DATA/test_2016_flickr.en.gz" > /tmp/test.en
for beam in 1 5; do
  python3 -m seq2seq evaluate -m /tmp/gpu_fp32/best.pt --src /tmp/test.de --ref /tmp/test.en \
    --device cuda --beam $beam --json
done
echo "Zwei Männer stehen am Strand." | python3 -m seq2seq translate -m /tmp/gpu_fp32/best.pt --device cuda
# Stopped by SIGTERM, resumed: it must continue from where it was.
python3 -m seq2seq train $CONFIG --run-dir /tmp/gpu_resume --set train.save_every=10 \
  --set train.max_steps=60 > /tmp/gpu_resume.log 2>&1 &
pid=$!
while [ ! -f /tmp/gpu_resume/last.pt ]; do sleep 0.5; done
sleep 2; kill -TERM $pid; wait $pid; echo "interrupted: exit $?"
python3 -m seq2seq train --resume --run-dir /tmp/gpu_resume >> /tmp/gpu_resume.log 2>&1
echo "resumed: exit $?"; grep -h "stopped by\|resuming\|finished" /tmp/gpu_resume.log
