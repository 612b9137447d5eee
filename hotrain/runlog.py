"""What a training run tells the user: messages, metrics, TensorBoard scalars and a progress bar (rank 0)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class RunLog:
    """Rank 0 writes: messages (stderr + out/train.log), metrics (out/metrics.jsonl), TensorBoard (out/tb)."""

    def __init__(self, out: Path, rank: int, resume_step: int | None):
        self.rank, self.out = rank, out
        self.tb = None
        if rank != 0:
            return
        out.mkdir(parents=True, exist_ok=True)
        metrics = out / "metrics.jsonl"
        if resume_step is not None and metrics.exists():  # drop records newer than the checkpoint we resume
            keep = [ln for ln in metrics.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= resume_step]
            metrics.write_text("".join(ln + "\n" for ln in keep))
        elif resume_step is None:
            metrics.write_text("")
        self.metrics = open(metrics, "a")
        self.text = open(out / "train.log", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step)
        except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
            self.info("tensorboard is not installed: no out/tb logs")

    def info(self, msg: str) -> None:
        if self.rank != 0:
            return
        print(f"[hotrain] {msg}", file=sys.stderr, flush=True)
        self.text.write(msg + "\n")
        self.text.flush()

    def record(self, rec: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.metrics.write(json.dumps(rec) + "\n")
        self.metrics.flush()
        if self.tb is not None:
            prefix = rec.get("split", "train")
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{prefix}/{k}", v, rec["step"])

    def close(self) -> None:
        if self.rank == 0:
            self.metrics.close()
            self.text.close()
            if self.tb is not None:
                self.tb.close()


def make_progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[ips]:.1f} img/s  loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                    disable=not enabled, transient=False)
