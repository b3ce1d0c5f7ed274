"""Resident memory of a seq2seq command over time, phase by phase.

    python scripts/memory.py --out memory_tutorial.png -- \
        seq2seq --verbose train --config configs/multi30k_de_en_tutorial.yaml \
        --set train.max_steps=40

Runs the command as a child process, samples its resident set size (VmRSS in
/proc/PID/status) every --interval seconds, and marks phases by the lines the child
writes on stderr as they arrive (with --verbose, training's log names each phase as it starts:
SentencePiece training, tokenizing, each epoch, each validation, each save). Draws RSS
against time with the phases shaded, and prints each phase's peak, and the child's peak
RSS as the kernel counts it (ru_maxrss from wait4: the number `/usr/bin/time -v` prints
as "Maximum resident set size"). The child's stderr is passed through.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# A line that starts a phase -> the phase's name ({0} is the line's first number). The
# training phase in between is named by the epoch being trained.
PHASE_LINES = [
    (re.compile(r"training SentencePiece models"), "SentencePiece training"),
    (re.compile(r"tokenizing (\d+) training pairs"), "tokenizing, vocabularies"),
    (re.compile(r"training pairs: \d+"), "model, optimizer"),
    (re.compile(r"validating at step (\d+)"), "validation at step {0}"),
    (re.compile(r"validation at step (\d+)"), "saving best/kept, curves"),
    (re.compile(r"epoch (\d+) done"), "saving last.pt"),
    (re.compile(r"finished after"), "finishing"),
    (re.compile(r"averaging \d+ checkpoints?"), "averaging, saving"),
]
TRAINING_LINES = re.compile(r"^(model: |saved )")  # training resumes after these
EPOCH_DONE = re.compile(r"epoch (\d+) done")


@dataclass
class Phase:
    name: str
    start: float
    end: float = float("inf")


@dataclass
class Recording:
    times: list[float] = field(default_factory=list)  # seconds since the child started
    rss: list[int] = field(default_factory=list)  # bytes
    phases: list[Phase] = field(default_factory=list)
    max_rss: int = 0  # ru_maxrss in bytes
    status: int = 0

    def begin(self, name: str, at: float) -> None:
        if self.phases:
            self.phases[-1].end = at
        self.phases.append(Phase(name, at))

    def peak(self, phase: Phase) -> tuple[int, float]:
        """(peak RSS in bytes, when) over the samples inside the phase."""
        inside = [
            (r, t)
            for t, r in zip(self.times, self.rss, strict=True)
            if phase.start <= t <= phase.end
        ]
        return max(inside, default=(0, phase.start))


def vm_rss(pid: int) -> int | None:
    """The process's resident set size in bytes, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None  # a zombie has no VmRSS line


def follow_stderr(stream: Iterable[str], recording: Recording, started: float) -> None:
    """Pass the child's stderr through, starting a phase at each line that names one
    (tqdm's carriage-return updates count as lines)."""
    epoch = 1
    for raw in stream:
        sys.stderr.write(raw)
        sys.stderr.flush()
        for line in raw.replace("\r", "\n").splitlines():
            now = time.monotonic() - started
            done = EPOCH_DONE.search(line)
            epoch = int(done.group(1)) + 1 if done else epoch
            if TRAINING_LINES.search(line):
                recording.begin(f"epoch {epoch}", now)
                continue
            for pattern, name in PHASE_LINES:
                match = pattern.search(line)
                if match:
                    recording.begin(name.format(*match.groups()), now)
                    break


def record(command: list[str], interval: float) -> Recording:
    """Run `command`, sampling its RSS until it exits."""
    recording = Recording()
    name = Path(command[0]).name if len(command) < 2 else f"{Path(command[0]).name} {command[1]}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    recording.begin(f"{name}: start-up", 0.0)
    reader = threading.Thread(target=follow_stderr, args=(child.stderr, recording, started))
    reader.start()
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:  # reaped here, so that ru_maxrss is the child's own
            recording.max_rss, recording.status = usage.ru_maxrss * 1024, status
            child.returncode = os.waitstatus_to_exitcode(status)
            break
        rss = vm_rss(child.pid)
        if rss is not None:
            recording.times.append(time.monotonic() - started)
            recording.rss.append(rss)
        time.sleep(interval)
    reader.join()
    recording.phases[-1].end = time.monotonic() - started
    # Phases between two lines of the same moment (training between two saves) are dropped.
    recording.phases = [p for p in recording.phases if p.end - p.start >= interval]
    if len(recording.phases) == 1:  # a command that names no phase: one phase, the command
        recording.phases[0].name = name
    return recording


def report(recording: Recording) -> str:
    lines = [f"{'phase':<32} {'from s':>8} {'to s':>8} {'peak RSS MB':>12} {'at s':>8}"]
    for phase in recording.phases:
        peak, at = recording.peak(phase)
        found = f"{peak / 1e6:12.0f} {at:8.1f}" if peak else f"{'no sample':>12} {'':>8}"
        lines.append(f"{phase.name:<32} {phase.start:8.1f} {phase.end:8.1f} {found}")
    sampled = max(recording.rss, default=0)
    lines.append(f"peak RSS sampled: {sampled / 1e6:.0f} MB")
    lines.append(
        f"Maximum resident set size (ru_maxrss, as /usr/bin/time -v): {recording.max_rss / 1e6:.0f}"
        f" MB ({recording.max_rss // 1024} kbytes)"
    )
    return "\n".join(lines)


def plot(recording: Recording, title: str, path: Path) -> None:
    """RSS against time, each phase a shaded band labelled at the top, the peak marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(13, 5))
    rss = [r / 1e9 for r in recording.rss]
    axis.plot(recording.times, rss, color="black", lw=1)
    top = max(rss, default=1.0) * 1.25
    colors = plt.get_cmap("tab20").colors
    names = sorted({p.name.split(" at step")[0] for p in recording.phases})
    for phase in recording.phases:
        color = colors[names.index(phase.name.split(" at step")[0]) % len(colors)]
        axis.axvspan(phase.start, phase.end, color=color, alpha=0.35, lw=0)
        peak, _ = recording.peak(phase)
        if phase.end - phase.start > 0.015 * max(recording.times, default=1):
            label = f"{phase.name}\n{peak / 1e9:.2f} GB"
            middle = (phase.start + phase.end) / 2
            axis.text(middle, top * 0.98, label, rotation=90, ha="center", va="top", fontsize=7)
    peak = max(range(len(rss)), key=rss.__getitem__, default=None)
    if peak is not None:
        axis.plot(recording.times[peak], rss[peak], "rv")
        axis.annotate(
            f"peak {rss[peak]:.2f} GB", (recording.times[peak], rss[peak]), xytext=(5, 5),
            textcoords="offset points", color="red",
        )  # fmt: skip
    axis.set(xlabel="seconds", ylabel="resident set size (GB)", ylim=(0, top), title=title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="The PNG to draw.")
    parser.add_argument("--title", help="The plot's title (default: the command).")
    parser.add_argument("--interval", type=float, default=0.05, help="Seconds between samples.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run.")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    recording = record(command, args.interval)
    plot(recording, args.title or " ".join(command), args.out)
    print(report(recording), file=sys.stderr)
    sys.exit(recording.status and os.waitstatus_to_exitcode(recording.status))


if __name__ == "__main__":
    main()
