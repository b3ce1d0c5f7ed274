#!/usr/bin/env bash
# Mutation testing of the core modules (docs/design.md, "How we test"). mutmut makes
# one-line changes ("mutants") in the functions of a module, one at a time, in a copy of
# the tree (./mutants/), and runs the fast tests that reach the changed function
# ([tool.mutmut] in pyproject.toml). A mutant that no test notices has survived.
#
#   scripts/mutation.sh                 every core module
#   scripts/mutation.sh search loss     some of them
#   JOBS=4 scripts/mutation.sh          4 mutants at a time (default 1)
#
# Every mutant of the modules named is tested again on each run. The run ends with one
# line per module: mutants, caught (a test failed, or ran past its time limit), missed
# (survived, or reached by no test), equivalent (the same program: listed with the reason
# in scripts/mutation-equivalent.txt) and the score, caught / (mutants - equivalent); then
# the missed mutants. `mutmut show NAME` prints one, `mutmut browse` all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

core=(search loss attention encoder decoder model ensemble optimization validation run
      data metrics tokenizer batching)
modules=("$@")
[[ ${#modules[@]} -gt 0 ]] || modules=("${core[@]}")
patterns=()
for module in "${modules[@]}"; do
    if [[ " ${core[*]} " != *" $module "* ]]; then
        echo "error: '$module' is not a core module: ${core[*]}" >&2
        exit 2
    fi
    if [[ $module == tokenizer ]]; then  # its detokenization, not the tokenizers' set-up
        patterns+=("seq2seq.tokenizer.x*Tokenizer*detokenize*" "seq2seq.tokenizer.x*_rejoin*"
                   "seq2seq.tokenizer.x__capitalized*")
    else
        patterns+=("seq2seq.$module.*")
    fi
done

SECONDS=0
nice -n 15 mutmut run --max-children "${JOBS:-1}" "${patterns[@]}"
echo "mutmut ran for $((SECONDS / 60)) min $((SECONDS % 60)) s"
mutmut results --all true > mutants/results.txt

python3 - mutants/results.txt scripts/mutation-equivalent.txt "${patterns[@]}" <<'EOF'
import collections
import fnmatch
import sys

results, equivalent_list, *patterns = sys.argv[1:]
equivalent = set()
for line in open(equivalent_list, encoding="utf-8"):
    name = line.split("#", 1)[0].strip()
    if name:
        equivalent.add(name.split()[0])
counts = collections.defaultdict(collections.Counter)
missed = []
for line in open(results, encoding="utf-8"):
    name, _, status = line.strip().rpartition(": ")
    if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
        continue
    module = name.split(".")[1]
    counts[module]["mutants"] += 1
    if name in equivalent:
        counts[module]["equivalent"] += 1
    elif status in ("killed", "timeout", "segfault"):
        counts[module]["caught"] += 1
    else:  # survived, no tests, suspicious; "not checked": the run was interrupted
        counts[module]["missed"] += 1
        missed.append(f"{name}: {status}")
total = sum(counts.values(), collections.Counter())
print(f"{'module':14} {'mutants':>7} {'caught':>7} {'missed':>7} {'equivalent':>10} {'score':>6}")
for module, row in [*sorted(counts.items()), ("all", total)]:
    score = 100 * row["caught"] / max(1, row["mutants"] - row["equivalent"])
    print(f"{module:14} {row['mutants']:7} {row['caught']:7} {row['missed']:7} "
          f"{row['equivalent']:10} {score:5.1f}%")
print("\n".join(["", "missed:", *missed] if missed else []))
EOF
