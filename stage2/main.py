"""The single Hydra entry point: `stage2 stage=filter|tokenizer|shard|pipeline|report|verify`.

This module only composes and checks the config, sets up the run folder and dispatches; each stage's
work lives in its own module (stage2/filter.py, tokenizer.py, shard.py, ...).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from stage2.errors import Stage2Error
from stage2.schema import check_ranges, register, validate

log = logging.getLogger("stage2")

# Absolute, so the app finds its configs as a console script, via `python -m`, from any directory.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _data_path(rel: str) -> str:
    return str(DATA_DIR / rel)


def register_all() -> None:
    register()
    if not OmegaConf.has_resolver("stage2_data"):
        OmegaConf.register_new_resolver("stage2_data", _data_path)


register_all()


def resolve_config(cfg: DictConfig, launch_dir: str, rerun_of: Optional[str] = None) -> Dict[str, Any]:
    """Re-apply the schema (a rerun from a saved config has none), resolve, and return plain data."""
    cfg = validate(cfg)
    if cfg.launch_dir is None:
        cfg.launch_dir = launch_dir
    cfg.rerun_of = rerun_of
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=True)
    check_ranges(plain)  # type: ignore[arg-type]
    return plain  # type: ignore[return-value]


def saved_run_folder(hydra_cfg: Any) -> Optional[str]:
    """The past run folder whose `.hydra/config.yaml` is this run's primary config, if any."""
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            folder = Path(source.path)
            if folder.name == ".hydra" and (folder.parent / "provenance.json").exists():
                return str(folder.parent)
    return None


def run_stage(cfg: Dict[str, Any], run_dir: Path) -> Path:
    from stage2 import pipeline

    return pipeline.run_stage(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> None:
    # A log file that cannot be written (full disk) must not print tracebacks over the real error.
    logging.raiseExceptions = False
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    verbose = bool(cfg.get("verbose", False))
    try:
        rerun_of = saved_run_folder(hydra_cfg)
        if rerun_of and Path(rerun_of).resolve() == run_dir.resolve() and not cfg.get("resume", False):
            raise Stage2Error(f"{run_dir}: refusing to write into the run being rerun; give a new hydra.run.dir (stage2-rerun does) or resume=true")
        launch_dir = hydra_cfg.runtime.cwd
        if rerun_of:  # relative input paths mean what they meant for the original run
            launch_dir = yaml.safe_load((Path(rerun_of) / "config.resolved.yaml").read_text()).get("launch_dir") or launch_dir
        plain = resolve_config(cfg, launch_dir, rerun_of)
        run_stage(plain, run_dir)
    except Stage2Error as exc:
        fail(run_dir, hydra_cfg, verbose, str(exc))
    except KeyboardInterrupt:
        print(f"stage2: interrupted; finished partitions are kept in {run_dir} (resume=true continues)", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        log.exception("unexpected error")
        fail(run_dir, hydra_cfg, verbose, f"{type(exc).__name__}: {exc} (verbose=true shows the traceback; the log is in {run_dir})")


def fail(run_dir: Path, hydra_cfg: Any, verbose: bool, message: str) -> None:
    """One line on stderr and exit 1; in a sweep, mark the job failed and let the other jobs run."""
    if verbose:
        raise
    log.error("%s", message)
    print(f"stage2: error: {message}", file=sys.stderr)
    stats_file = run_dir / "stats.json"
    if hydra_cfg.mode != RunMode.MULTIRUN:
        if stats_file.exists():
            mark_failed(stats_file, message)
        sys.exit(1)
    # The sweep summary lists the failure and the sweep exits non-zero at its end.
    mark_failed(stats_file, message)


def mark_failed(stats_file: Path, message: str) -> None:
    from stage2.run import write_json

    try:
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        stats.update(status="failed", error=message)
        write_json(stats_file, stats)
    except (OSError, ValueError, Stage2Error) as exc:  # e.g. the disk is full: the error line matters more
        log.warning("could not mark %s as failed: %s", stats_file, exc)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
