"""Write data/toy: a small German-English parallel corpus of templated sentences.

The project's own data for tests and the toy config: every pair is a correct
translation built from subject, verb phrase and place; the split is deterministic.
Usage: python scripts/make_toy_data.py [OUT_DIR]
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

# (German, English, plural?)
SUBJECTS = [
    ("Ein Mann", "A man", False),
    ("Eine Frau", "A woman", False),
    ("Ein Kind", "A child", False),
    ("Ein Hund", "A dog", False),
    ("Ein Junge", "A boy", False),
    ("Zwei Männer", "Two men", True),
    ("Drei Frauen", "Three women", True),
    ("Einige Kinder", "Some children", True),
]
# (German singular, German plural, English singular, English plural)
VERBS = [
    ("läuft", "laufen", "runs", "run"),
    ("spielt", "spielen", "plays", "play"),
    ("sitzt", "sitzen", "sits", "sit"),
    ("steht", "stehen", "stands", "stand"),
    ("wartet", "warten", "waits", "wait"),
    ("tanzt", "tanzen", "dances", "dance"),
    ("schläft", "schlafen", "sleeps", "sleep"),
    ("isst", "essen", "eats", "eat"),
]
PLACES = [
    ("am Strand", "on the beach"),
    ("im Park", "in the park"),
    ("auf der Straße", "on the street"),
    ("im Schnee", "in the snow"),
    ("vor dem Haus", "in front of the house"),
    ("neben dem Auto", "next to the car"),
    ("im Wasser", "in the water"),
    ("auf dem Gras", "on the grass"),
]


def pairs() -> list[tuple[str, str]]:
    result = []
    for de_subject, en_subject, plural in SUBJECTS:
        for de_singular, de_plural, en_singular, en_plural in VERBS:
            for de_place, en_place in PLACES:
                de_verb = de_plural if plural else de_singular
                en_verb = en_plural if plural else en_singular
                result.append(
                    (f"{de_subject} {de_verb} {de_place}.", f"{en_subject} {en_verb} {en_place}.")
                )
    return result


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "data/toy")
    out.mkdir(parents=True, exist_ok=True)
    data = pairs()
    random.Random(13).shuffle(data)
    splits = {"train": data[:400], "val": data[400:456], "test": data[456:512]}
    for split, rows in splits.items():
        for side, lang in ((0, "de"), (1, "en")):
            text = "".join(row[side] + "\n" for row in rows)
            (out / f"{split}.{lang}").write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(f'{k} {len(v)}' for k, v in splits.items())} pairs to {out}")


if __name__ == "__main__":
    main()
