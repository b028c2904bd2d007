"""Hydra callbacks that guard run folders (kept apart from run.py: workers need not import Hydra)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from stage2.errors import Stage2Error
from stage2.run import check_resumable


class RunFolderGuard(Callback):
    """Checks a single run's folder before Hydra writes `.hydra/` into it.

    Without it, pointing hydra.run.dir at a finished run would overwrite that run's saved recipe before
    stage2 could refuse. A resume keeps the folder's original `.hydra/` record.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir)
        if not (run_dir / "stats.json").exists():
            return
        from stage2.main import resolve_config

        task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            check_resumable(run_dir, resolve_config(task_cfg, config.hydra.runtime.cwd))
        except Stage2Error as exc:
            print(f"stage2: error: {exc}", file=sys.stderr)
            sys.exit(1)
        with read_write(config.hydra):
            config.hydra.output_subdir = None
