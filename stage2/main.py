"""The single Hydra entry point: `stage2 stage=filter|tokenizer|shard|pipeline|report|verify`.

This module only composes and checks the config, sets up the run folder and dispatches; each stage's
work lives in its own module (stage2/stages/filter.py, tokenizer.py, shard.py, ...).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from stage2.errors import Stage2Error, SystemRefused, first_line
from stage2.config import Config, register, validate

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


# The keys a `dataset=files` path's entry takes from the dataset when it leaves them unset.
PATH_SHARED_KEYS = ("text_column", "id_column", "lang_filter")


def complete_path_entries(cfg: DictConfig) -> None:
    """`dataset=files`: an entry `dataset.components.<name>` without files of its own holds the settings of
    the path whose component is <name>; what it leaves unset it takes from dataset.text_column, id_column,
    lang_filter and the path's dataset.weights value, so the recipe records every path's settings."""
    from stage2.io.sources import component_name, format_of_name

    dataset = cfg.get("dataset")
    if not isinstance(dataset, DictConfig) or not dataset.get("paths") or not isinstance(dataset.get("components"), DictConfig):
        return
    weights = list(dataset.get("weights") or [])
    for index in range(len(dataset.paths)):
        try:
            pattern = dataset.paths[index]
        except OmegaConfBaseException as exc:
            raise Stage2Error(config_error(exc, f"dataset.paths[{index}]")) from None
        entry = dataset.components.get(component_name(str(pattern)))
        if not isinstance(entry, DictConfig) or entry.get("data_files") or entry.get("hub_path"):
            continue
        text_file = str(entry.get("format") or format_of_name(str(pattern))) == "text"  # (a name that tells none: said at start-up)
        with open_dict(entry):  # (a rerun's saved config is closed to new keys)
            for key in PATH_SHARED_KEYS:
                if key == "text_column" and text_file:
                    entry.setdefault(key, "text")  # a text file's one column; dataset.text_column names JSON's and parquet's
                elif key not in entry and key in dataset:
                    entry[key] = dataset[key]
            if "weight" not in entry and index < len(weights):
                entry["weight"] = weights[index]


def config_error(exc: Exception, key: Optional[str] = None) -> str:
    """OmegaConf's error in one line, naming the key; an interpolation's says how to write a literal '${'."""
    from omegaconf.errors import InterpolationResolutionError

    unknown = unknown_key(exc)
    if unknown:
        return unknown
    hint = " (a literal '${' is written '\\${' on the command line and in YAML)" if isinstance(exc, InterpolationResolutionError) else ""
    return f"{key or getattr(exc, 'full_key', None) or 'config'}: {str(exc).splitlines()[0]}{hint}"


def unknown_key(exc: BaseException) -> Optional[str]:
    """A key the schema lacks (a typo, or `+key=...`), said with its config path and the closest key the
    section has, or None for any other error. OmegaConf names the section's Python class instead."""
    import dataclasses
    import difflib

    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    section_type = getattr(exc, "object_type", None)
    if not isinstance(exc, (ConfigAttributeError, ConfigKeyError)) or not dataclasses.is_dataclass(section_type) or not getattr(exc, "full_key", None):
        return None
    full_key = str(exc.full_key)
    section = full_key.rpartition(".")[0]
    close = difflib.get_close_matches(str(exc.key), [f.name for f in dataclasses.fields(section_type)], n=1)
    hint = f"; did you mean {section + '.' if section else ''}{close[0]}?" if close else ""
    return f"{full_key}: no such key{' in ' + section if section else ''}{hint} (every key: docs/configuration.md)"


def resolve_config(cfg: DictConfig, launch_dir: str, rerun_of: Optional[str] = None) -> Config:
    """Re-apply the schema (a rerun from a saved config has none), resolve, check, and return the typed config."""
    try:
        complete_path_entries(cfg)
        cfg = validate(cfg)
    except OmegaConfBaseException as exc:  # e.g. a key added with `+key=...` that the schema does not have
        raise Stage2Error(config_error(exc)) from exc
    if cfg.launch_dir is None:
        cfg.launch_dir = launch_dir
    cfg.rerun_of = rerun_of
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # (its error for a missing value says which)
        config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:  # `${...}` in a value is an interpolation, also in a path
        raise Stage2Error(config_error(exc)) from None
    config.check()
    config.absolutize_paths()
    return config


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
    from stage2.io.files import atomic_write

    atomic_write(saved, text + yaml.safe_dump({"hydra": ours}, sort_keys=False, allow_unicode=True))


def compose_recipe(overrides: List[str], launch_dir: str) -> Config:
    """The resolved recipe that `stage2 <overrides>` launched from `launch_dir` would run.

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
    from stage2.runtime import folder

    # A log file that cannot be written (full disk) must not print tracebacks over the real error.
    logging.raiseExceptions = False
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    verbose = bool(getattr(cfg, "verbose", False))
    single = hydra_cfg.mode != RunMode.MULTIRUN
    if single:  # (a sweep's new job folders are its own from the start)
        _hold_log_until_claimed(run_dir)
    else:
        folder.keep(Path(hydra_cfg.sweep.dir))  # a job ran in the sweep's folder: it stays whatever follows
        if folder.restore_records(run_dir):  # a resumed sweep's job in a run's folder: the run's record stays
            _hold_log_until_claimed(run_dir)
    try:
        complete_saved_config(hydra_cfg)
        rerun_of = saved_run_folder(hydra_cfg)
        launch_dir = hydra_cfg.runtime.cwd
        if rerun_of:  # relative input paths mean what they meant for the original run
            launch_dir = yaml.safe_load((Path(rerun_of) / "config.resolved.yaml").read_text()).get("launch_dir") or launch_dir
        try:
            config = resolve_config(cfg, launch_dir, rerun_of)
        except Stage2Error as exc:
            overrides = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)  # (as given: `${...}` in one is not resolved)
            raise Stage2Error(in_option_file(hydra_cfg.runtime, overrides, str(exc))) from exc
        for note in dataset_tokenizer_precedence(hydra_cfg.runtime, OmegaConf.to_container(cfg.tokenizer, resolve=False)):
            log.warning("%s", note)
        from stage2.stages.pipeline import run_stage  # here: `--help` and config errors need none of the stages

        if not gc.isenabled():  # start-up is over (stage2.cli turned the collector off for it)
            # What start-up left, its few MB of cyclic garbage too, is never looked at again: a collection
            # would cost the driver about as much CPU as the collector's passes that were skipped.
            gc.freeze()
            gc.enable()
        # A read-only stage run alone writes no folder (in a sweep its job folder holds its report).
        run_stage(config, run_dir, record=not (single and config.stage in ("report", "verify")))
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (`Interrupted`); the stage has stopped its workers
        interrupted(run_dir, getattr(exc, "signum", signal.SIGINT))
    except Exception as exc:
        try:
            _failed(run_dir, hydra_cfg, verbose, exc)
        except KeyboardInterrupt as late:  # the signal's handler ran after the error it caused (workers it stopped)
            interrupted(run_dir, getattr(late, "signum", signal.SIGINT))
    finally:
        if single:
            folder.abandon(run_dir)  # a run that never owned its folder leaves it as it was (or leaves none)
        else:
            folder.release(run_dir, done=True)  # the next job of the sweep starts afresh, even in the same folder


def option_file(runtime: Any, group: str, option: str) -> Optional[Path]:
    """The YAML file Hydra took a group's option from: the first of the run's config folders that has it
    (stage2's conf first, then --config-dir's, as Hydra reads them)."""
    files = (Path(src.path) / group / f"{option}.yaml" for src in runtime.config_sources if src.schema == "file")
    return next((f for f in files if f.is_file()), None)


def in_option_file(runtime: Any, overrides: List[str], message: str) -> str:
    """A schema error about a key that a group option of the user's own (a --config-dir file) set, said
    with that file, as Hydra says its own composition errors; the message as it is otherwise."""
    key = re.match(r"[A-Za-z_][\w.-]*", message)
    group = key.group(0).split(".")[0] if key else None
    option = runtime.choices.get(group) if group else None
    if not option:
        return message
    given = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    given = [g for g in given if g not in runtime.choices]  # (`dataset=mine` chooses the option: it sets no key)
    if any(key.group(0) == g or key.group(0).startswith(g + ".") for g in given):  # the command line set it
        return message
    found = option_file(runtime, group, option)
    if found is None or str(found).startswith(CONF_DIR + os.sep):
        return message
    return f"In '{group}/{option}' ({found}): {message}"


def dataset_tokenizer_precedence(runtime: Any, tokenizer: Dict[str, Any]) -> List[str]:
    """What a chosen tokenizer option sets and the dataset's tokenizer settings (dataset_tokenizer/<dataset>.yaml,
    composed after it) replace: said, since choosing an option normally sets its values. Only the keys the
    option's own file sets to other values than the default option (bpe), which the dataset's file is written against."""
    choices = runtime.choices
    option, dataset = choices.get("tokenizer"), choices.get("dataset_tokenizer@tokenizer")
    if not option or not dataset or option == "bpe":
        return []
    def own_keys(group: str, name: str) -> Dict[str, Any]:
        path = option_file(runtime, group, name)
        data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path else {}
        return {k: v for k, v in data.items() if k != "defaults"} if isinstance(data, dict) else {}

    chosen, base, by_dataset = own_keys("tokenizer", option), own_keys("tokenizer", "bpe"), own_keys("dataset_tokenizer", dataset)
    return [
        f"tokenizer={option} sets {key}: {chosen[key]}, but dataset_tokenizer/{dataset}.yaml, composed after it for"
        f" dataset={dataset}, sets {by_dataset[key]}, which this run uses: give tokenizer.{key}={chosen[key]} on the"
        f" command line to use the option's"
        for key in sorted(set(chosen) & set(by_dataset))
        if chosen[key] != base.get(key) and tokenizer.get(key) == by_dataset[key] != chosen[key]
    ]


def _failed(run_dir: Path, hydra_cfg: Any, verbose: bool, exc: Exception) -> None:
    from stage2.runtime import folder
    from stage2.runtime.executor import interrupted_by

    if interrupted_by() is not None and not verbose:  # e.g. SentencePiece turned the interrupt into its own error
        interrupted(run_dir, interrupted_by())
    if isinstance(exc, Stage2Error):
        fail(run_dir, hydra_cfg, verbose, str(exc), keep=_resumable(exc))
        return
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, BrokenProcessPool) and folder.owns(run_dir):  # a worker killed (the kernel's OOM killer, a kill -9)
        _log_to_files("a worker process died", exc_info=True)
        fail(run_dir, hydra_cfg, verbose, f"a worker process ended abruptly (killed: out of memory? see `dmesg`); finished partitions are"
             f" kept in {run_dir}: `stage2-rerun {run_dir} resume=true` continues the run (fewer executor.workers use less memory)", keep=True)
        return
    _log_to_files("unexpected error", exc_info=True)  # the traceback goes to the run's log, not the terminal
    where = f"; the log is in {run_dir}" if folder.owns(run_dir) else ""
    fail(run_dir, hydra_cfg, verbose, f"{describe(exc)} (verbose=true shows the traceback{where})", keep=True)


def interrupted(run_dir: Path, signum: int) -> None:
    """Ctrl-C or SIGTERM: one line saying how to go on, `status: interrupted`, exit 128 + the signal."""
    from stage2.runtime import folder

    what = f"interrupted ({'Ctrl-C' if signum == signal.SIGINT else signal.Signals(signum).name})"
    if folder.owns(run_dir):
        from stage2.runtime.run import remove_stale_temporaries

        mark_failed(run_dir / "stats.json", what, status="interrupted", only_existing=True)
        remove_stale_temporaries(run_dir)  # what the killed workers were writing
        _log_to_files(what)
        how = f"`stage2-rerun {run_dir} resume=true` continues the run"
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:  # the sweep's later jobs never ran
            given = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "resume="))]
            command = " ".join(shlex.quote(a) for a in [*given, f"hydra.sweep.dir={HydraConfig.get().sweep.dir}", "resume=true"])
            how = f"`stage2 {command}` continues the sweep"
        print(f"stage2: {what}; finished partitions are kept in {run_dir}: {how}", file=sys.stderr)
    else:
        print(f"stage2: {what} before the run started; nothing was written", file=sys.stderr)
    sys.exit(128 + signum)


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

    from stage2.runtime import folder

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


def _resumable(exc: BaseException) -> bool:
    """Whether a failed run's folder is worth keeping: the system refused a read or a write (a full disk,
    permissions, an I/O error), which `resume=true` gets past once it is fixed. A failure on the input or
    the recipe is not: a resume refuses changed inputs and recipes, and the same ones fail the same way."""
    while exc is not None:
        if isinstance(exc, (OSError, SystemRefused)):
            return True
        exc = exc.__cause__
    return False


def fail(run_dir: Path, hydra_cfg: Any, verbose: bool, message: str, keep: bool = True) -> None:
    """One line on stderr and exit 1; in a sweep, mark the job failed and let the other jobs run.

    A single run that started its folder and failed in a way no resume gets past (`keep=False`) takes
    the folder away again: it holds nothing to continue, and the error line says what went wrong.
    """
    from stage2.runtime import folder

    _log_to_files(message)
    if not verbose:  # (verbose: the traceback, raised below once the folder is dealt with as always)
        print(f"stage2: error: {message}", file=sys.stderr)
    single = hydra_cfg.mode != RunMode.MULTIRUN
    if single and not keep and folder.owns(run_dir) and folder.discard(run_dir):
        if verbose:
            raise
        sys.exit(1)
    # In a sweep the job is marked (the summary lists it, the sweep exits 1 at its end) and the others go on.
    # A run records the failure only in a folder it owns or that holds no run: a refused start (a job
    # folder that holds a finished run) leaves that run as it was.
    if not single:
        folder.note_failed(run_dir)
    if folder.owns(run_dir) or not (single or folder.foreign(run_dir) or (run_dir / "stats.json").exists()):
        mark_failed(run_dir / "stats.json", message, only_existing=single)
    if verbose:
        raise
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
    from stage2.io.files import write_json

    if only_existing and not stats_file.exists():
        return
    try:
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        stats.update(status=status, error=message)
        write_json(stats_file, stats)
    except (OSError, ValueError, Stage2Error) as exc:  # e.g. the disk is full: the error line matters more
        log.warning("could not mark %s as failed: %s", stats_file, exc)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM in the driver: handled like Ctrl-C, and the exit code says which (128 + signal)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_stop_signal(signum: int, frame: Any) -> None:
    from stage2.runtime.executor import note_interrupt

    note_interrupt(signum)  # executors now kill their workers rather than wait for their tasks
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not break the cleanup
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def _wants_traceback(argv: List[str]) -> bool:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return True
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "verbose" and value.strip().lower() in ("true", "yes", "on", "1"):
            return True
    return False


def hydra_error(exc: BaseException) -> str:
    """Hydra's own error (composition, override syntax, a config file, a folder) in one line."""
    from hydra.errors import MissingConfigException, OverrideParseException

    chain, seen = [], exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for error in chain:
        mark = getattr(error, "problem_mark", None)
        if isinstance(error, yaml.YAMLError) and mark is not None:  # a config file that is not valid YAML
            context = f" ({error.context})" if getattr(error, "context", None) else ""
            return f"{mark.name}: line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {error.problem}{context}"
    for error in chain:
        if isinstance(error, OSError) and not isinstance(error, MissingConfigException) and error.filename:
            return describe(error)
    first = first_line(exc)
    if isinstance(exc, MissingConfigException) and exc.options:
        return f"{first} (available: {', '.join(exc.options)})"
    if isinstance(exc, OverrideParseException):
        return f"{exc.override}: {first}"
    cause = exc.__cause__ or exc.__context__  # (a config file's error is Hydra's context, not its cause)
    where = re.match(r"(In '[^']+'): \w+ raised while composing config:?$", first)
    if where:  # a group option's file: name it, then what was wrong
        first = where.group(1)
    unknown = unknown_key(cause) if cause is not None else None
    if unknown:  # (Hydra's message would suggest `+key=...`, which fails too)
        return f"{first}: {unknown}" if where else unknown
    if cause is not None and first_line(cause) not in first:  # e.g. "Error merging override x=abc": what was wrong
        key = getattr(cause, "full_key", None)
        said = f"{first}: {f'{key}: ' if key and key not in first else ''}{first_line(cause)}{_value_hint(key, first_line(cause))}"
        if re.search(r"Key \S+ \((bool|int|float)\) is incompatible with \(str\)", said):  # `no:` or `2024:` as a YAML key
            said += " (YAML reads an unquoted no, yes, on, off, true, false or a number as that value: quote the name)"
        return said
    return first if first != type(exc).__name__ else describe(exc)


def _value_hint(key: Optional[str], problem: str) -> str:
    """How to write the value the schema wanted, for the two mistakes OmegaConf's words do not explain."""
    if "is not a ListConfig, list or tuple" in problem:
        return f" (a list is written in brackets: {key or 'key'}=[a,b])"
    if key and "expected one of" in problem:
        from stage2.config import Config

        node: Any = OmegaConf.structured(Config)
        try:
            for part in key.split("."):
                node = node._get_node(part)
        except Exception:  # noqa: BLE001 - no hint rather than a second error
            return ""
        return f" (or null: {key}=null turns it off)" if node is not None and node._is_optional() else ""
    return ""


# Hydra's command-line options that take a value, and --info's optional one.
OPTIONS_WITH_VALUE = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--cfg", "-c", "--package", "-p",
                      "--shell-completion", "-sc", "--experimental-rerun"}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def options_first(args: List[str]) -> List[str]:
    """Hydra's options before the overrides: its parser takes the overrides as one positional list, so an
    option between two overrides (`stage=filter --config-dir conf dataset=mine`) was a usage error."""
    options: List[str] = []
    overrides: List[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            overrides.append(arg)
        elif arg in OPTIONS_WITH_VALUE and i + 1 < len(args) or arg in ("--info", "-i") and i + 1 < len(args) and args[i + 1] in INFO_TOPICS:
            options += [arg, args[i + 1]]
            i += 1
        else:
            options.append(arg)
        i += 1
    return options + overrides


def main() -> None:
    from stage2.runtime import folder

    sys.argv[1:] = options_first(sys.argv[1:])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_stop_signal)
    # Hydra prints its own errors (a config file, an override, a folder) as tracebacks; with
    # HYDRA_FULL_ERROR it raises them instead, and they are said here in one line.
    traceback_wanted = _wants_traceback(sys.argv[1:])
    os.environ["HYDRA_FULL_ERROR"] = "1"  # (workers inherit it: they do not use Hydra)
    try:
        app()
    except KeyboardInterrupt as exc:  # before or between the runs (composing the config, starting a sweep)
        folder.abandon_all()
        signum = getattr(exc, "signum", signal.SIGINT)
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"stage2: interrupted ({what}) before the run started; nothing was written", file=sys.stderr)
        sys.exit(128 + signum)
    except Exception as exc:
        folder.abandon_all()  # e.g. a sweep folder whose jobs were never launched
        if traceback_wanted:
            raise
        print(f"stage2: error: {hydra_error(exc)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
