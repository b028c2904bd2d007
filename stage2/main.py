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
from typing import Any, Dict, List, Optional

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stage2.errors import Stage2Error
from stage2.schema import check_ranges, register, validate

log = logging.getLogger("stage2")

# Absolute, so the app finds its configs as a console script, via `python -m`, from any directory.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _data_path(rel: str) -> str:
    return str(DATA_DIR / rel)


# Each backend's calibrated threshold (benchmarks/results/filter_quality.md): fastText's English
# probabilities run lower than langdetect's, so `filter.lang_backend=fasttext` alone must not keep 0.85.
DEFAULT_LANG_THRESHOLD = {"langdetect": 0.85, "langdetect_fast": 0.85, "fasttext": 0.4}


def _lang_threshold(backend: str) -> float:
    return DEFAULT_LANG_THRESHOLD[str(backend).split(".")[-1]]  # (an Enum prints as LangBackend.x)


def register_all() -> None:
    register()
    if not OmegaConf.has_resolver("stage2_data"):
        OmegaConf.register_new_resolver("stage2_data", _data_path)
    if not OmegaConf.has_resolver("stage2_lang_threshold"):
        OmegaConf.register_new_resolver("stage2_lang_threshold", _lang_threshold)


register_all()


def resolve_config(cfg: DictConfig, launch_dir: str, rerun_of: Optional[str] = None) -> Dict[str, Any]:
    """Re-apply the schema (a rerun from a saved config has none), resolve, and return plain data."""
    try:
        cfg = validate(cfg)
    except OmegaConfBaseException as exc:  # e.g. a key added with `+key=...` that the schema does not have
        raise Stage2Error(f"{getattr(exc, 'full_key', None) or 'config'}: {str(exc).splitlines()[0]}") from exc
    if cfg.launch_dir is None:
        cfg.launch_dir = launch_dir
    cfg.rerun_of = rerun_of
    plain: Dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=True)  # type: ignore[assignment]
    check_ranges(plain)
    absolutize_paths(plain, plain["launch_dir"])
    return plain


def absolutize_paths(cfg: Dict[str, Any], launch_dir: str) -> None:
    """Record every user-given path as absolute (relative ones mean: from the launch directory)."""

    def absolute(path: Optional[str]) -> Optional[str]:
        return path if path is None or os.path.isabs(path) else os.path.normpath(os.path.join(launch_dir, path))

    dataset = cfg["dataset"]
    dataset["paths"] = [absolute(p) for p in dataset.get("paths") or []]
    for comp in (dataset.get("components") or {}).values():
        if comp.get("data_files"):
            comp["data_files"] = [absolute(p) for p in comp["data_files"]]
    for section, key in (("tokenizer", "input_run"), ("shard", "input_run"), ("shard", "tokenizer"), ("report", "dir"), ("verify", "dir")):
        cfg[section][key] = absolute(cfg[section].get(key))
    cfg["report"]["compare"] = [absolute(p) for p in cfg["report"].get("compare") or []]
    cfg["runs_index"] = absolute(cfg["runs_index"])


def complete_saved_config(hydra_cfg: Any) -> None:
    """Add stage2's `hydra:` settings to the job's saved `.hydra/config.yaml`.

    Hydra saves the task config without them, so `--config-path <run>/.hydra --config-name config`
    would rerun with Hydra's defaults: folders without microseconds, `main.log`, and none of stage2's
    callbacks (the guard that keeps a finished run's `.hydra/` from being overwritten, sweep summaries).
    """
    if hydra_cfg.output_subdir is None:
        return
    saved = Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir / "config.yaml"
    if not saved.is_file():
        return
    text = saved.read_text(encoding="utf-8")
    if any(line.startswith("hydra:") for line in text.splitlines()):
        return
    ours = yaml.safe_load((Path(CONF_DIR) / "config.yaml").read_text(encoding="utf-8"))["hydra"]
    from stage2.files import atomic_write

    atomic_write(saved, text + yaml.safe_dump({"hydra": ours}, sort_keys=False, allow_unicode=True))


def compose_recipe(overrides: List[str], launch_dir: str) -> Dict[str, Any]:
    """The resolved recipe that `stage2 <overrides>` launched from `launch_dir` would run, as plain data.

    For notebooks, tests and benchmarks: Hydra's compose API on conf/, then the same checks as the CLI.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return resolve_config(cfg, str(launch_dir))


def saved_run_folder(hydra_cfg: Any) -> Optional[str]:
    """The past run folder whose `.hydra/config.yaml` is this run's primary config, if any."""
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            folder = Path(source.path)
            if folder.name == ".hydra" and (folder.parent / "provenance.json").exists():
                return str(folder.parent)
    return None


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> None:
    from stage2 import folder

    # A log file that cannot be written (full disk) must not print tracebacks over the real error.
    logging.raiseExceptions = False
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    verbose = bool(cfg.get("verbose", False))
    single = hydra_cfg.mode != RunMode.MULTIRUN
    if single:  # (a sweep's job folders are its own from the start)
        _hold_log_until_claimed(run_dir)
    try:
        complete_saved_config(hydra_cfg)
        rerun_of = saved_run_folder(hydra_cfg)
        launch_dir = hydra_cfg.runtime.cwd
        if rerun_of:  # relative input paths mean what they meant for the original run
            launch_dir = yaml.safe_load((Path(rerun_of) / "config.resolved.yaml").read_text()).get("launch_dir") or launch_dir
        plain = resolve_config(cfg, launch_dir, rerun_of)
        from stage2.pipeline import run_stage  # here: `--help` and config errors need none of the stages

        # A read-only stage run alone writes no folder (in a sweep its job folder holds its report).
        run_stage(plain, run_dir, record=not (single and plain["stage"] in ("report", "verify")))
    except Stage2Error as exc:
        fail(run_dir, hydra_cfg, verbose, str(exc))
    except KeyboardInterrupt:
        if folder.owns(run_dir):
            mark_failed(run_dir / "stats.json", "interrupted (Ctrl-C)", status="interrupted", only_existing=True)
            print(f"stage2: interrupted; finished partitions are kept in {run_dir} (resume=true continues)", file=sys.stderr)
        else:
            print("stage2: interrupted before the run started; nothing was written", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        _log_to_files("unexpected error", exc_info=True)  # the traceback goes to the run's log, not the terminal
        where = f"; the log is in {run_dir}" if folder.owns(run_dir) else ""
        fail(run_dir, hydra_cfg, verbose, f"{describe(exc)} (verbose=true shows the traceback{where})")
    finally:
        if single:
            folder.abandon(run_dir)  # a run that never owned its folder leaves it as it was (or leaves none)
        else:
            folder.release(run_dir)


def describe(exc: BaseException) -> str:
    """An unexpected exception in one line; an OSError names its file first, like stage2's own errors."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _hold_log_until_claimed(run_dir: Path) -> None:
    """Keep the run's log in memory until the run owns its folder (`folder.claim`), then write it out.

    Hydra opens `stage2.log` before the app starts; a start refused by a check must not add a line to
    the log of the finished run it refused to touch (nor leave a new folder with only a log in it).
    """
    from logging.handlers import MemoryHandler

    from stage2 import folder

    root = logging.getLogger()
    target = run_dir.resolve()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent.resolve() == target]
    if not files:
        return
    memory = MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1, target=None, flushOnClose=False)
    for handler in files:
        root.removeHandler(handler)
    root.addHandler(memory)

    def write_out() -> None:
        root.removeHandler(memory)
        for handler in files:
            for record in memory.buffer:
                if record.levelno >= handler.level:
                    handler.handle(record)
            root.addHandler(handler)
        memory.buffer.clear()

    folder.on_claim(run_dir, write_out)


def fail(run_dir: Path, hydra_cfg: Any, verbose: bool, message: str) -> None:
    """One line on stderr and exit 1; in a sweep, mark the job failed and let the other jobs run."""
    from stage2 import folder

    if verbose:
        raise
    _log_to_files(message)
    print(f"stage2: error: {message}", file=sys.stderr)
    single = hydra_cfg.mode != RunMode.MULTIRUN
    # In a sweep the job is always marked (the summary lists it, the sweep exits 1 at its end) and the others go on.
    # A single run records the failure only in a folder it owns: a refused start leaves a finished run as it was.
    if not single or folder.owns(run_dir):
        mark_failed(run_dir / "stats.json", message, only_existing=single)
    if single:
        sys.exit(1)


def _log_to_files(message: str, exc_info: bool = False) -> None:
    """The error into the run's stage2.log, not to the console: the stderr line already says it there."""
    root = logging.getLogger()
    consoles = [h for h in root.handlers if type(h) is logging.StreamHandler]  # FileHandler is a subclass
    for handler in consoles:
        root.removeHandler(handler)
    try:
        log.error("%s", message, exc_info=exc_info)
    finally:
        for handler in consoles:
            root.addHandler(handler)


def mark_failed(stats_file: Path, message: str, status: str = "failed", only_existing: bool = False) -> None:
    from stage2.files import write_json

    if only_existing and not stats_file.exists():
        return
    try:
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        stats.update(status=status, error=message)
        write_json(stats_file, stats)
    except (OSError, ValueError, Stage2Error) as exc:  # e.g. the disk is full: the error line matters more
        log.warning("could not mark %s as failed: %s", stats_file, exc)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
