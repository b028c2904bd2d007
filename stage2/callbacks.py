"""Hydra callbacks that guard run folders (kept apart from run.py: workers need not import Hydra)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from stage2 import folder
from stage2.errors import Stage2Error
from stage2.run import check_resumable

READ_ONLY_STAGES = ("report", "verify")


def stage_name(config: Any) -> str:
    stage = config.get("stage")
    return str(getattr(stage, "value", stage))  # (the schema's Enum, or a plain string)


class RunFolderGuard(Callback):
    """Checks a single run's folder before Hydra writes `.hydra/` and the log into it.

    Without it, pointing hydra.run.dir at a finished run would overwrite that run's saved recipe before
    stage2 could refuse, and two processes could write one folder. It notes what the folder held (so
    that a run refused at start-up, or a read-only stage, leaves nothing behind: `folder.abandon`) and
    takes the folder's lock. A resume keeps the folder's original `.hydra/` record.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir)
        folder.watch(run_dir)
        if stage_name(config) in READ_ONLY_STAGES:
            # They write no run folder: nothing to record (Hydra still makes the folder; the app removes it).
            with read_write(config.hydra):
                config.hydra.output_subdir = None
            return
        try:
            folder.lock(run_dir)
            if (run_dir / "stats.json").exists():
                from stage2.main import resolve_config

                task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
                check_resumable(run_dir, resolve_config(task_cfg, config.hydra.runtime.cwd))
                with read_write(config.hydra):
                    config.hydra.output_subdir = None
        except Stage2Error as exc:
            folder.abandon(run_dir)
            print(f"stage2: error: {exc}", file=sys.stderr)
            sys.exit(1)
