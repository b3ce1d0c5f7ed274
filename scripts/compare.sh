#!/usr/bin/env bash
# The Multi30k comparisons of docs/results.md: variants of the recommended config (word vs
# SentencePiece vocabularies, encoder gates none/se/cbam) and the tutorial config under
# three seeds, and the ensemble members (rec-seed-N, emb512-seed-N), each trained in its
# own process side by side on one machine, then scored on test_2016_flickr by
# scripts/results.py (best.pt and the average of the kept checkpoints, greedy and beam 5).
# Ensembles of the members: scripts/ensemble_results.py.
#
#   bash scripts/compare.sh DATA_DIR DEVICE OUT_DIR [SECONDS] [VARIANT ...]
#
# DEVICE is cpu or cuda; SECONDS (default 400) stops a training that is still running with
# SIGTERM, which saves it (the epochs reached are in its row); VARIANTs pick some of the
# names below (default: all). Writes OUT_DIR/results.md and each run's folder.
# EXTRA="--set key=value ..." is added to every training (e.g. a short smoke test).
set -u
cd "$(dirname "$0")/.."
DATA=${1:?usage: compare.sh DATA_DIR DEVICE OUT_DIR [SECONDS] [VARIANT ...]}
DEVICE=${2:?device}
OUT=${3:?out dir}
SECONDS_LIMIT=${4:-400}
shift $(($# < 4 ? $# : 4))
RECOMMENDED="--config configs/multi30k_de_en.yaml"
TUTORIAL="--config configs/multi30k_de_en_tutorial.yaml"
SP="--set vocab.type=sentencepiece"
# The vocabulary and gate comparisons (docs/results.md) ran when the recommended config
# still had the word vocabulary: `word` and the gates set it back.
WORD="--set vocab.type=word"
declare -A RUNS=(
  [word]="$RECOMMENDED $WORD"
  [sp-unigram-4k]="$RECOMMENDED $SP --set vocab.size=4000"
  [sp-unigram-8k]="$RECOMMENDED $SP --set vocab.size=8000"
  [sp-bpe-8k]="$RECOMMENDED $SP --set vocab.model_type=bpe --set vocab.size=8000"
  [sp-unigram-joint-10k]="$RECOMMENDED $SP --set vocab.size=10000 --set vocab.joint=true"
  [gate-se]="$RECOMMENDED $WORD --set model.encoder.gate=se"
  [gate-cbam]="$RECOMMENDED $WORD --set model.encoder.gate=cbam"
  [tutorial-seed-1234]="$TUTORIAL"
)
for seed in 1 2 3 4 5 6 7; do RUNS[tutorial-seed-$seed]="$TUTORIAL --set seed=$seed"; done
# Ensemble members: the recommended config and the member configs (512-wide embeddings),
# seeds 1-4.
for seed in 1 2 3 4; do
  RUNS[rec-seed-$seed]="$RECOMMENDED --set seed=$seed"
  RUNS[emb512-seed-$seed]="--config configs/multi30k_de_en_member$seed.yaml"
done
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(word sp-unigram-4k sp-unigram-8k sp-bpe-8k sp-unigram-joint-10k
  gate-se gate-cbam tutorial-seed-1234 tutorial-seed-1 tutorial-seed-2)
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
run() {  # name: train (stopped after SECONDS_LIMIT), then score
  local name=$1
  # shellcheck disable=SC2086
  timeout -s TERM "$SECONDS_LIMIT" python3 -m seq2seq train ${RUNS[$name]} \
    --set data.dir="$DATA" --set train.device="$DEVICE" --set train.threads=1 \
    ${EXTRA:-} --run-dir "$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "train exit $?" >> "$OUT/$name.log"
  python3 scripts/results.py "$OUT/$name" --data "$DATA" --device "$DEVICE" \
    > "$OUT/$name.md" 2>> "$OUT/$name.log"
}
for name in "${NAMES[@]}"; do run "$name" & done
wait
for name in "${NAMES[@]}"; do
  echo "## $name: ${RUNS[$name]}"
  tail -1 "$OUT/$name.log"
  cat "$OUT/$name.md"
done > "$OUT/results.md"
cat "$OUT/results.md"
