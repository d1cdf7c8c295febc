"""The progress display of the long commands (search, train, finetune) on stderr: rich bars on a terminal, lines
in logs, nothing with --quiet."""

from __future__ import annotations

import sys
from typing import Any

from nasprune_cli.cli import output


def progress_mode(quiet: bool) -> str:
    """off (--quiet), bars (a terminal) or lines (logs)."""
    return "off" if quiet else "bars" if sys.stderr.isatty() else "lines"


class Progress:
    """Progress on stderr, fed by the library's on_progress(stage, done, total) and its on_score(value).

    mode "bars": rich progress bars, one per stage (a terminal); "lines": a line when a stage starts and ends, and one
    every INTERVAL_S seconds with the steps done / total, the time elapsed and an estimate of the time left (logs,
    nohup); "off": nothing (--quiet)."""

    LABELS = {"sensitivity": "sensitivity map", "search": "search", "reconstruct": "refit weights"}
    UNITS = {"reconstruct": "layers", "latency table": "measurements"}  # else "evaluations"
    INTERVAL_S = 5.0

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        self.started: dict[str, float] = {}
        self.last_line = 0.0
        self.scores: list[float] = []  # the first (the original model's, in a fresh run) and the latest score
        self.info: Any = None  # the score's ScoreInfo, set once the options are known

    def __enter__(self) -> Progress | None:
        if self.mode == "off":
            return None
        if self.mode == "bars":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[score]}"),
                console=Console(stderr=True),
            )
            self.bar.start()
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        label = self.LABELS.get(stage, stage)
        if self.bar is not None:
            if stage not in self.tasks:
                self.tasks[stage] = self.bar.add_task(label, total=total, score="")
            self.bar.update(self.tasks[stage], completed=done, total=total, score=self.score_text())
            return
        unit = self.UNITS.get(stage, "evaluations")
        if stage not in self.started:
            self.started[stage] = self.last_line = now
            output.info(f"{label}: started, {total} {unit}")
        elapsed = now - self.started[stage]
        if done >= total:
            self.started.pop(stage)  # a later pass of the same stage starts again
            self.last_line = now
            output.info(f"{label}: done, {done}/{total} {unit} in {_clock(elapsed)}{self.score_text(', ')}")
        elif done > 0 and now - self.last_line >= self.INTERVAL_S:
            self.last_line = now
            left = elapsed / done * (total - done)
            output.info(
                f"{label}: {done}/{total} {unit}, {_clock(elapsed)} elapsed, about {_clock(left)} left"
                f"{self.score_text(', ')}"
            )

    def on_score(self, value: float) -> None:
        """A measured score (the library calls it after every evaluation)."""
        self.scores = [self.scores[0], value] if self.scores else [value]

    def score_text(self, prefix: str = "") -> str:
        """e.g. 'val accuracy: last subnet 98.90% (first 99.20%)': the latest score, and the first one (the
        original model's, in a fresh run) to compare it with."""
        if self.info is None or not self.scores:
            return ""
        text = f"{prefix}{self.info.label}: last subnet {self.info.format(self.scores[-1])}"
        return text + (f" (first {self.info.format(self.scores[0])})" if len(self.scores) > 1 else "")

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def _clock(seconds: float) -> str:
    """0:07, 3:25, 1:02:03."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
