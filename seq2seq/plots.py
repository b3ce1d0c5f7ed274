"""Training curves from a run folder's metrics.jsonl, drawn as curves.png."""

from __future__ import annotations

from pathlib import Path

from seq2seq.errors import UserError
from seq2seq.files import write_atomic
from seq2seq.run import RunFolder, read_metrics
from seq2seq.translation import Translation


def plot_run(run_dir: str | Path, path: Path | None = None) -> Path:
    """Loss, perplexity and BLEU/chrF against optimizer steps, drawn into `path` (the run's
    curves.png by default); returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    records = read_metrics(folder.metrics)
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    if not train and not valid:
        raise UserError(f"{folder.metrics}: no training records to plot")

    figure, (loss_axis, ppl_axis, bleu_axis) = plt.subplots(1, 3, figsize=(15, 4.2))
    loss_axis.plot(*_curve(train, "loss"), label="train", lw=1)
    loss_axis.plot(*_curve(valid, "loss"), "o-", label="validation")
    loss_axis.set(title="cross-entropy per token", xlabel="step", ylabel="loss")
    for key, label in (("perplexity", "gold inputs"), ("free_running_perplexity", "free-running")):
        ppl_axis.plot(*_curve(valid, key), "o-", label=label)
    ppl_axis.set(title="validation perplexity", xlabel="step", ylabel="perplexity", yscale="log")
    for key, label in (
        ("bleu", "sacreBLEU"),
        ("chrf", "chrF"),
        ("tokenized_bleu", "tokenized BLEU"),
    ):
        bleu_axis.plot(*_curve(valid, key), "o-", label=label)
    bleu_axis.set(title="validation scores (greedy)", xlabel="step", ylabel="score")
    for axis in (loss_axis, ppl_axis, bleu_axis):
        axis.legend()
    for axis in (loss_axis, ppl_axis, bleu_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    path = path or folder.curves
    try:
        write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    finally:
        plt.close(figure)
    return path


def _curve(records: list[dict], key: str) -> tuple[list[float], list[float | None]]:
    """(steps, values) of the records that hold a number for `key` at a step; a null (a
    non-finite value, metrics.jsonl stays JSON) is a gap in the curve, anything else that
    an edited log may hold is left out."""
    points = [(r["step"], r[key]) for r in records if _number(r.get("step")) and key in r]
    points = [(step, value) for step, value in points if value is None or _number(value)]
    return [step for step, _ in points], [value for _, value in points]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def plot_attention(translation: Translation, path: str | Path) -> Path:
    """A heatmap of one translation's attention: source tokens across, output tokens down.

    With an encoder gate, a row of its temporal weights (CBAM) sits above the source axis
    and a strip of its channel weights beside the heatmap: the two kinds of attention,
    side by side."""
    import matplotlib
    import numpy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns, weights = translation.attention_grid()
    weights = numpy.asarray(weights)  # a torch tensor or a numpy array
    gates = translation.gates
    width = max(4.0, 0.45 * len(columns) + 1.5) + (1.0 if gates else 0.0)
    height = max(3.0, 0.4 * len(rows) + 1.2) + (0.6 if gates and gates.temporal is not None else 0)
    figure = plt.figure(figsize=(width, height))
    temporal_rows = 1 if gates is not None and gates.temporal is not None else 0
    grid = figure.add_gridspec(
        1 + temporal_rows,
        2 if gates else 1,
        height_ratios=[0.6, len(rows)] if temporal_rows else [1],
        width_ratios=[len(columns), 0.8] if gates else [1],
        hspace=0.05,
        wspace=0.05,
    )
    axis = figure.add_subplot(grid[temporal_rows, 0])
    image = axis.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axis.set_xticks(range(len(columns)), columns, rotation=60, ha="right")
    axis.set_yticks(range(len(rows)), rows)
    axis.set_xlabel("source")
    axis.set_ylabel("output (additive attention)")
    if temporal_rows:
        strip = figure.add_subplot(grid[0, 0], sharex=axis)
        strip.imshow(gates.temporal[None, : len(columns)].numpy(), cmap="magma", vmin=0, vmax=1,
                     aspect="auto")  # fmt: skip
        strip.set_yticks([0], ["temporal gate"])
        strip.tick_params(axis="x", labelbottom=False)
    if gates is not None:
        channel = figure.add_subplot(grid[temporal_rows, 1])
        channel.imshow(gates.channel[:, None].numpy(), cmap="magma", vmin=0, vmax=1, aspect="auto")
        channel.set_xticks([0], ["channel\ngate"])
        channel.yaxis.tick_right()
        channel.set_ylabel("encoder channel")
        channel.yaxis.set_label_position("right")
    figure.colorbar(image, ax=figure.axes, fraction=0.04, pad=0.14 if gates else 0.02)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return Path(path)
