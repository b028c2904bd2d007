"""Hydra callbacks that guard run folders (kept apart from run.py: workers need not import Hydra)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from stage2.runtime import folder
from stage2.errors import Stage2Error
from stage2.runtime.run import check_resumable

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

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep's folder must be new, empty or a stage2 sweep's, before Hydra writes `multirun.yaml` into it.

        It is watched like a run folder: a sweep that ends before its first job (a job's config that does
        not compose, an interrupt) leaves no folder holding only `multirun.yaml` (`folder.abandon_all`).
        """
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            check_job_subdir(OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir"))
            check_sweep_folder(sweep_dir, resume=bool(config.get("resume")))
        except Stage2Error as exc:
            print(f"stage2: error: {exc}", file=sys.stderr)
            sys.exit(1)
        folder.watch(sweep_dir)
        if config.get("resume") and sweep_dir.is_dir():
            from stage2.stages.report import job_folders

            # Hydra rewrites these before any job's checks: each job's record stays its run's (stage2.main.app).
            folder.save_records(sweep_dir, ["multirun.yaml"])
            for job in job_folders(sweep_dir):
                if (job / "stats.json").is_file() and (job / ".hydra").is_dir():
                    folder.save_records(job, [f".hydra/{p.name}" for p in (job / ".hydra").iterdir() if p.is_file()])


# What makes a sweep's job folders differ: without one of these, every job writes one folder, and
# Hydra rewrites its .hydra/ record and log before stage2 could refuse the second job.
JOB_UNIQUE = ("hydra.job.num", "hydra.job.id", "hydra.job.override_dirname")


def check_job_subdir(subdir: Any) -> None:
    if not any(key in str(subdir) for key in JOB_UNIQUE):
        raise Stage2Error(
            f"hydra.sweep.subdir={subdir} can give two jobs of the sweep the same folder (a job's .hydra/ record would"
            " overwrite another's); include ${hydra.job.num} (the default; e.g. ${hydra.job.num}_mc${filter.min_chars})"
            " or ${hydra.job.override_dirname}"
        )


def check_sweep_folder(sweep_dir: Path, resume: bool = False) -> None:
    key = Path(os.path.abspath(sweep_dir))
    for path in (key, *key.parents):
        if path.is_dir():
            break
        if os.path.lexists(path):
            raise Stage2Error(f"{path} is a file, not a folder: choose a folder for hydra.sweep.dir")
    if not os.access(path, os.W_OK | os.X_OK) and not (path == key and any(key.iterdir())):  # (read-only, another user's)
        raise Stage2Error(
            f"{key}: cannot create the sweep folder ({path} cannot be written): choose another hydra.sweep.dir,"
            " or launch from a folder you can write"
        )
    if not key.is_dir() or not any(key.iterdir()):
        return
    try:
        ours = OmegaConf.load(key / "multirun.yaml").hydra.job.name == "stage2"
    except Exception:  # noqa: BLE001 - missing, unreadable or another program's: not a stage2 sweep
        ours = False
    if ours:
        # Hydra rewrites a job folder's .hydra/ and log before stage2 could refuse the job: a sweep
        # that already ran jobs here is continued with resume=true only, never run over.
        runs = sorted(p.name for p in key.iterdir() if (p / "stats.json").is_file())
        if runs and not resume:
            raise Stage2Error(
                f"{key} holds the runs of an earlier sweep ({', '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}); choose another"
                " hydra.sweep.dir, or resume=true to continue its jobs"
            )
        return
    names = sorted(p.name for p in key.iterdir())
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise Stage2Error(
        f"{key} is not empty and holds no stage2 sweep ({shown}); nothing in it was changed: choose an empty or new"
        " folder for hydra.sweep.dir"
    )
