#!/usr/bin/env bash
# Exact resume on Multi30k: an uninterrupted 20-step run of the tutorial config against
# one stopped by SIGTERM mid-way and resumed; prints whether the weights and validation
# scores are identical. Usage: bash scripts/check_resume.sh [DATA_DIR]
set -u
cd "$(dirname "$0")/.."
DATA=${1:-data/multi30k}
S="--config configs/multi30k_de_en_tutorial.yaml --set data.dir=$DATA --set train.max_steps=20 --set train.threads=1 --set train.save_every=5"
rm -rf /tmp/m30k_a /tmp/m30k_b
seq2seq train $S --run-dir /tmp/m30k_a > /tmp/m30k_a.log 2>&1
seq2seq train $S --run-dir /tmp/m30k_b > /tmp/m30k_b.log 2>&1 &
pid=$!
while [ ! -f /tmp/m30k_b/last.pt ]; do sleep 1; done
sleep 20; kill -TERM $pid; wait $pid; echo "interrupted run exit: $?"
seq2seq train --resume --run-dir /tmp/m30k_b >> /tmp/m30k_b.log 2>&1; echo "resumed exit: $?"
python - <<'PY'
import json, torch
a = torch.load('/tmp/m30k_a/last.pt', weights_only=True); b = torch.load('/tmp/m30k_b/last.pt', weights_only=True)
print("steps", a["step"], b["step"], "identical weights:", all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]))
for run in "ab":
    v = [json.loads(l) for l in open(f"/tmp/m30k_{run}/metrics.jsonl") if '"valid"' in l][-1]
    print(run, {k: v[k] for k in ("step", "loss", "perplexity", "bleu", "chrf", "tokenized_bleu")})
PY
grep -h "stopped by\|resuming" /tmp/m30k_b.log
