"""Reports: a sweep's summary table and plot, one run's stats, the runs index, two runs side by side.

`SweepSummaryCallback` runs when a Hydra multirun ends and writes `summary.md`, `summary.csv` and
`summary.png` into the sweep folder; `stage2 stage=report report.dir=<sweep>` regenerates them. The
core reads only the run-folder contract (stats.json, .hydra/overrides.yaml, config.resolved.yaml),
never the stages' code, so it works on any past run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml
from hydra.experimental.callback import Callback

from stage2.errors import Stage2Error
from stage2.io.files import atomic_path, atomic_write
from stage2.runtime.folder import failed_jobs

if TYPE_CHECKING:
    from stage2.config import Config

log = logging.getLogger(__name__)

SUMMARY_FILES = ("summary.md", "summary.csv", "summary.png")
BASE_COLUMNS = ["job", "folder", "overrides", "stage", "status"]


# ---------------------------------------------------------------- reading run folders


def is_run(folder: Path) -> bool:
    return (folder / "stats.json").is_file()


def job_folders(folder: Path) -> List[Path]:
    """A sweep's job folders, in job order: its subfolders that Hydra recorded a job in (`.hydra/`), named
    by `hydra.sweep.subdir` (`${hydra.job.num}` by default, or e.g. `${hydra.job.override_dirname}`)."""
    if not folder.is_dir():
        return []
    jobs, below = [], [p for p in folder.iterdir() if p.is_dir()]
    while below:  # (a subdir of `${hydra.job.override_dirname}` with a path in a value nests: look down to the .hydra/)
        path = below.pop()
        if path.name.isdigit() and path.parent == folder or (path / ".hydra").is_dir():
            jobs.append(path)
        elif not path.name.startswith("."):
            below += [p for p in path.iterdir() if p.is_dir()]
    return sorted(jobs, key=lambda p: (_job_number(p), str(p)))


def _job_number(job: Path) -> int:
    """The job's `hydra.job.num` (its folder name by default); jobs with none recorded sort last."""
    if job.name.isdigit():
        return int(job.name)
    try:
        num = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text(encoding="utf-8"))["hydra"]["job"]["num"]
        return int(num)
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return 1 << 62


def is_sweep(folder: Path) -> bool:
    """A stage2 sweep: Hydra's record of it names stage2's job, or its job folders hold stage2 runs
    (another program's sweep folder is not ours to write a summary into)."""
    saved = folder / "multirun.yaml"
    if saved.is_file():
        try:
            return yaml.safe_load(saved.read_text(encoding="utf-8"))["hydra"]["job"]["name"] == "stage2"
        except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
            return False
    return any(is_stage2_run(j) for j in job_folders(folder))


def is_stage2_run(folder: Path) -> bool:
    try:
        return is_run(folder) and "stage2_version" in json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def read_stats(folder: Path) -> Dict[str, Any]:
    path = folder / "stats.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Stage2Error(f"{path}: not found (the run did not finish?)") from None
    except json.JSONDecodeError as exc:
        raise Stage2Error(f"{path}: not valid JSON ({exc})") from None


def read_overrides(folder: Path) -> List[str]:
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in (yaml.safe_load(path.read_text(encoding="utf-8")) or [])]


def read_config(folder: Path) -> Dict[str, Any]:
    path = folder / "config.resolved.yaml"
    if not path.is_file():
        raise Stage2Error(f"{path}: not found; {folder} is not a stage2 run folder")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise Stage2Error(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def flatten(obj: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested dicts as dotted keys; lists and scalars stay values."""
    if not isinstance(obj, dict) or (not obj and prefix):
        return {prefix: obj}
    out: Dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


# ---------------------------------------------------------------- sweep summary


def override_map(overrides: Sequence[str]) -> Dict[str, str]:
    """`key=value` overrides as a dict; `+key`, `++key` and `~key` count as `key`."""
    out: Dict[str, str] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out


def swept_keys(maps: Sequence[Dict[str, str]]) -> List[str]:
    """Keys whose override differs between jobs (or is missing in some), in first-seen order."""
    keys: List[str] = []
    for m in maps:
        keys.extend(k for k in m if k not in keys)
    return [k for k in keys if len({m.get(k) for m in maps}) > 1]


HYGIENE_REASONS = ("decontaminate", "url")  # drop reasons of steps that are off unless their keys are set


def metrics(stats: Dict[str, Any]) -> Dict[str, Any]:
    """The headline figures of one run, as ordered `metric.component` columns."""
    stages = stats.get("stages") or {}
    out: Dict[str, Any] = {}
    filt = stages.get("filter") or {}
    filter_comps = filt.get("components") or {}
    for name, comp in filter_comps.items():
        if comp.get("records_in"):
            out[f"kept_share.{name}"] = comp.get("kept", 0) / comp["records_in"]
    # The hygiene steps' drops per component (0 where a step ran and dropped nothing): what a sweep of
    # their settings (filter.decontaminate.ngram=8,13) moves.
    for reason in HYGIENE_REASONS:
        for name, comp in filter_comps.items():
            if reason in (comp.get("dropped") or {}):
                out[f"dropped_{reason}.{name}"] = comp["dropped"][reason]
    # Language drops per check, over the mixture (a threshold sweep moves documents between checks):
    # 0, not a blank, for a check of the run's rule that dropped nothing.
    checks = [c for c in ("function_words" if filt.get("function_words") else None, filt.get("lang_check"), filt.get("lang_backend")) if c]
    language_filtered = [c for c in filter_comps.values() if c.get("lang_filter") is not False]
    if language_filtered and checks:
        for check in dict.fromkeys(checks + [k for c in language_filtered for k in c.get("language_dropped_by") or {}]):
            out[f"dropped_by_{check}.overall"] = sum((c.get("language_dropped_by") or {}).get(check, 0) for c in language_filtered)
    # Every drop reason over the mixture, 0s included: a sweep of any filter key shows where documents went.
    reasons: Dict[str, int] = {}
    for comp in filter_comps.values():
        for reason, n in (comp.get("dropped") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + int(n or 0)
    for reason, n in reasons.items():
        out[f"dropped_{reason}.overall"] = n
    tok = stages.get("tokenizer") or {}
    for name, comp in (tok.get("components") or {}).items():
        if comp.get("bytes_per_token") is not None:
            out[f"bytes_per_token.{name}"] = comp["bytes_per_token"]
        if comp.get("eval_docs") is not None:  # the held-out documents its bytes/token rests on
            out[f"eval_docs.{name}"] = comp["eval_docs"]
    if (tok.get("overall") or {}).get("bytes_per_token") is not None:
        out["bytes_per_token.overall"] = tok["overall"]["bytes_per_token"]
    if tok.get("vocab_size") is not None:
        out["vocab_size"] = tok["vocab_size"]
    shard_comps = (stages.get("shard") or {}).get("components") or {}
    if shard_comps:
        out["shard_tokens"] = sum(c.get("tokens", 0) for c in shard_comps.values())
    return out


def trained_on(job: Path, stage: str) -> str:
    """What a run's tokenizer trained on: its own filtered parts, a past run's, or the raw sources."""
    if stage == "pipeline":
        return "this run's filtered parts"
    try:
        past = ((read_config(job).get("tokenizer") or {}).get("input_run"))
    except Stage2Error:
        return "unknown (no config.resolved.yaml)"
    return f"filtered parts of {'/'.join(Path(past).parts[-2:])}" if past else "raw sources (unfiltered)"


def safe_overrides(job: Path) -> List[str]:
    try:
        return read_overrides(job)
    except (OSError, yaml.YAMLError, TypeError) as exc:
        log.warning("%s: unreadable overrides (%s)", job / ".hydra" / "overrides.yaml", exc)
        return []


def job_row(job: Path, sweep_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """One job's summary row; a job that cannot be read gets a row saying why, not an exception."""
    row: Dict[str, Any] = {"job": _job_number(job), "folder": os.path.relpath(job, sweep_dir)}
    row["overrides"] = " ".join(overrides)
    try:
        stats = read_stats(job)
        row["stage"] = stats.get("stage", "")
        # stats.json is written from a run's start: "running" here means the job stopped early.
        row["status"] = stats.get("status") or "ok"
        if "tokenizer" in (stats.get("stages") or {}):
            row["trained_on"] = trained_on(job, stats.get("stage", ""))
        row.update(metrics(stats))
    except (Stage2Error, OSError, AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        row["stage"] = ""
        row["status"] = f"unreadable: {exc}"
    return row


def summary_rows(sweep_dir: Path) -> Tuple[List[Dict[str, Any]], List[str], List[Dict[str, str]]]:
    """(rows, columns, each job's overrides as a dict) of a sweep folder."""
    jobs = job_folders(sweep_dir)
    overrides = [safe_overrides(j) for j in jobs]
    rows = [job_row(j, sweep_dir, o) for j, o in zip(jobs, overrides)]
    columns = list(BASE_COLUMNS)
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return rows, columns, [override_map(o) for o in overrides]


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Iterable[Dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(columns: Sequence[str], rows: Iterable[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    # Full precision in the CSV (it is for machines); the markdown rounds.
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def as_number(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_spec(rows: List[Dict[str, Any]], overrides: List[Dict[str, str]]) -> Optional[Tuple[str, str, List[Any]]]:
    """(metric prefix, x label, x value per row) for the plot, or None when there is nothing to plot.

    A sweep that changes the vocabulary size is a tokenizer sweep: bytes per token against vocab
    size. Otherwise the metric is kept share (or bytes per token if no filter ran) against the
    first swept key, preferring a `filter.` key.
    """
    has = lambda prefix: any(k.startswith(prefix) for r in rows for k in r)  # noqa: E731
    swept = swept_keys(overrides)
    vocab = [r.get("vocab_size") for r in rows]
    if has("bytes_per_token.") and len({v for v in vocab if v is not None}) > 1:
        return "bytes_per_token", "vocab size", vocab
    if not swept:
        return None
    key = next((k for k in swept if k.startswith("filter.")), swept[0])
    metric = "kept_share" if has("kept_share.") else "bytes_per_token" if has("bytes_per_token.") else None
    if metric is None:
        return None
    xs = [o.get(key) for o in overrides]
    return metric, key, xs


def plot_series(
    metric: str, rows: List[Dict[str, Any]], xs: List[Any], groups: Optional[List[str]] = None
) -> Tuple[List[str], Dict[Tuple[str, str], List[Tuple[float, float]]]]:
    """(x labels if x is categorical, else []; per (`metric.*` column, group) its sorted (x, y) points).

    `groups`: per row, the values of the swept keys other than x ("k=v, ..."; "" for all when only
    x was swept): each group gets its own line, so a two-key sweep is not drawn as one zigzag.
    A missing or null value (e.g. a component with no held-out documents) is no point at all, never 0.
    """
    numeric = all(as_number(x) is not None for x in xs if x is not None)
    labels: List[str] = []
    if not numeric:  # categorical values (e.g. a language list): one slot per distinct value
        labels = list(dict.fromkeys(str(x) for x in xs))
    position = (lambda x: as_number(x)) if numeric else (lambda x: float(labels.index(str(x))))
    groups = groups or [""] * len(rows)
    series: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
    for column in dict.fromkeys(c for r in rows for c in r if c.startswith(metric + ".")):
        for group in dict.fromkeys(groups):
            points = sorted(
                (position(x), as_number(r.get(column)))
                for x, r, g in zip(xs, rows, groups)
                if g == group and x is not None and as_number(r.get(column)) is not None
            )
            if points:
                series[(column, group)] = points
    return labels, series


def other_swept(overrides: List[Dict[str, str]], xs: List[Any]) -> Tuple[List[str], List[str]]:
    """(the swept keys that are not the x axis, per job "k=v, ..." of them). A key whose values map one
    to one onto x's (the key itself, or `tokenizer=...` choosing the vocabulary size) is the axis."""
    def same_axis(key: str) -> bool:
        pairs = {(str(o.get(key)), str(x)) for o, x in zip(overrides, xs)}
        return len(pairs) == len({k for k, _ in pairs}) == len({x for _, x in pairs})

    keys = [k for k in swept_keys(overrides) if not same_axis(k)]
    return keys, [", ".join(f"{k}={o.get(k)}" for k in keys) for o in overrides]


def heldout_note(rows: List[Dict[str, Any]], component: str) -> str:
    """" (n=...)": the held-out documents a component's bytes/token figures rest on (a range if jobs differ)."""
    counts = sorted({int(r[f"eval_docs.{component}"]) for r in rows if r.get(f"eval_docs.{component}") is not None})
    if component == "overall":
        counts = sorted({sum(int(v) for k, v in r.items() if k.startswith("eval_docs.") and v is not None) for r in rows if any(k.startswith("eval_docs.") for k in r)})
    if not counts:
        return ""
    return f" (n={counts[0]})" if len(counts) == 1 else f" (n={counts[0]}-{counts[-1]})"


def write_plot(path: Path, rows: List[Dict[str, Any]], overrides: List[Dict[str, str]]) -> bool:
    spec = plot_spec(rows, overrides)
    if spec is None:
        return False
    metric, xlabel, xs = spec
    others, groups = other_swept(overrides, xs)
    labels, series = plot_series(metric, rows, xs, groups)
    if not series:
        return False  # every value missing: an empty plot would only look like a result
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    # A colour per component (black for the mixture), a line style per value of the other swept keys.
    columns = list(dict.fromkeys(column for column, _ in series))
    group_names = list(dict.fromkeys(group for _, group in series))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for (column, group), points in series.items():
        overall = column.endswith(".overall")
        style = {
            "color": "black" if overall else colours[columns.index(column) % len(colours)],
            "linestyle": styles[group_names.index(group) % len(styles)] if len(group_names) > 1 else ("--" if overall else "-"),
        }
        label = column.split(".", 1)[1] + (f" ({group})" if group else "")
        if metric == "bytes_per_token":
            label += heldout_note(rows, column.split(".", 1)[1])
        ax.plot(*zip(*points), marker="o", label=label, **style)
    if labels:
        ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric.replace("_", " "))
    title = f"{metric.replace('_', ' ')} by {xlabel}" + (f" (also swept: {', '.join(others)})" if others else "")
    sources = sorted({str(r["trained_on"]) for r in rows if r.get("trained_on")})
    if metric == "bytes_per_token" and sources:
        title += f"\ntrained on {' / '.join(sources)}; n: held-out documents per figure"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        # No "Software" metadata: the PNG's bytes then do not depend on the matplotlib version.
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return True


def write_summary(sweep_dir: Path) -> str:
    """Write summary.md/.csv/.png into a sweep folder; return the markdown table."""
    rows, columns, overrides = summary_rows(sweep_dir)
    swept = swept_keys(overrides)
    if not rows:
        raise Stage2Error(f"{sweep_dir}: no job folders (0/, 1/, ... or a job folder of hydra.sweep.subdir with its .hydra/) in this sweep folder")
    table = markdown_table(columns, rows)
    # Named by its <date>/<time>, not the path it was given: a rebuilt summary has the same bytes.
    name = "/".join(Path(sweep_dir).resolve().parts[-2:])
    header = f"# Sweep {name}\n\n{len(rows)} jobs; swept: {', '.join(swept) or 'nothing'}\n\n"
    if not write_plot(sweep_dir / "summary.png", rows, overrides):
        (sweep_dir / "summary.png").unlink(missing_ok=True)  # a stale plot would contradict the table
        header += "(no plot: no swept value with metrics to plot)\n\n"
    atomic_write(sweep_dir / "summary.md", header + table)
    atomic_write(sweep_dir / "summary.csv", csv_text(columns, rows))
    return header + table


class SweepSummaryCallback(Callback):
    """Summarise a multirun when it ends; a failure here only logs a warning, never fails the sweep."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = None
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            from stage2.runtime import folder

            folder.restore_records(sweep_dir)  # a resumed sweep's multirun.yaml is the sweep's first record
            write_summary(sweep_dir)
            print(f"stage2: sweep summary: {sweep_dir / 'summary.md'}")
        except Exception as exc:  # noqa: BLE001 - the sweep's results matter more than its summary
            log.warning("could not write the sweep summary: %s: %s", type(exc).__name__, exc)
        failed = [os.path.relpath(j, sweep_dir) for j in job_folders(sweep_dir) if _failed(j)] if sweep_dir else []
        failed += [os.path.relpath(j, sweep_dir) if sweep_dir else str(j) for j in failed_jobs()]
        failed = list(dict.fromkeys(failed))
        if failed:
            print(f"stage2: error: {len(failed)} job(s) of the sweep failed: {', '.join(failed)} (the errors above; a job refused at start-up left its folder as it was, the others say why in their stats.json and logs)", file=sys.stderr)
            sys.exit(1)


def _failed(job: Path) -> bool:
    try:
        return json.loads((job / "stats.json").read_text()).get("status") == "failed"
    except (OSError, ValueError):
        return False  # report and verify jobs write no stats.json


# ---------------------------------------------------------------- one run, the index, comparisons


WIDE = 8  # a nested dict with more keys than this (a language histogram) gets one cell, not a column each


def component_cells(comps: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per component, its stats as table cells: small nested dicts as `key.sub` columns, wide ones
    as one cell of their largest entries, so a table stays readable whatever a stage records."""
    subkeys: Dict[str, set] = {}
    for comp in comps.values():
        for key, value in comp.items():
            if isinstance(value, dict):
                subkeys.setdefault(key, set()).update(value)
    out: Dict[str, Dict[str, Any]] = {}
    for name, comp in comps.items():
        cells: Dict[str, Any] = {}
        for key, value in comp.items():
            if isinstance(value, dict) and len(subkeys[key]) > WIDE:
                top = sorted(value.items(), key=lambda kv: (-kv[1], kv[0]) if isinstance(kv[1], (int, float)) else (0, kv[0]))
                more = f", +{len(top) - 5} more" if len(top) > 5 else ""
                cells[key] = ", ".join(f"{k} {fmt(v)}" for k, v in top[:5]) + more
            elif isinstance(value, dict):
                cells.update(flatten(value, key) if value else {})
            else:
                cells[key] = value
        out[name] = cells
    return out


def run_report(folder: Path) -> str:
    """One run's stats: its header, then per stage a table with one row per component."""
    stats = read_stats(folder)
    lines = [f"# Run {folder}", ""]
    for key in ("stage", "status", "dataset", "config_digest", "started", "seconds", "workers", "steps"):
        lines.append(f"- {key}: {fmt(stats.get(key))}")
    if stats.get("error"):  # a failed or interrupted run: what stopped it
        lines.append(f"- error: {stats['error']}")
    lines.append(f"- overrides: {' '.join(read_overrides(folder)) or '(none)'}")
    for stage, body in (stats.get("stages") or {}).items():
        lines += ["", f"## {stage}", ""]
        comps = dict(body.get("components") or {})
        if isinstance(body.get("overall"), dict):
            comps["(overall)"] = body["overall"]
        scalars = flatten({k: v for k, v in body.items() if k not in ("components", "overall")})
        lines += [f"- {k}: {fmt(v)}" for k, v in scalars.items()]
        if comps:
            flat = component_cells(comps)
            columns = ["component"] + list(dict.fromkeys(k for f in flat.values() for k in f))
            lines += ["", markdown_table(columns, [{"component": n, **f} for n, f in flat.items()]).rstrip()]
    return "\n".join(lines) + "\n"


def read_index(path: Path) -> List[Dict[str, Any]]:
    if not path.is_file():
        raise Stage2Error(f"{path}: runs index not found (no run has finished yet with this runs_index)")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise Stage2Error(f"{path}: line {number} is not valid JSON ({exc}): mend or remove that line") from None
    return entries


INDEX_COLUMNS = ["time", "stage", "dataset", "config_digest", "seconds", "folder"]
INDEX_HIDDEN = {"inputs_digest", "git_commit"}  # long and rarely what one scans a listing for


def index_report(path: Path, launch_dir: Path, stage: Optional[str] = None, dataset: Optional[str] = None) -> str:
    entries = [
        e for e in read_index(path)
        if (stage is None or e.get("stage") == stage) and (dataset is None or e.get("dataset") == dataset)
    ]
    rows = []
    for e in entries:
        folder = str(e.get("folder", ""))
        if folder.startswith(str(launch_dir) + os.sep):  # shorter, and what one types back as report.dir
            folder = os.path.relpath(folder, launch_dir)
        rows.append({**e, "folder": folder})
    columns = INDEX_COLUMNS + list(dict.fromkeys(k for e in entries for k in e if k not in INDEX_COLUMNS and k not in INDEX_HIDDEN))
    chosen = ", ".join(f"{k}={v}" for k, v in (("stage", stage), ("dataset", dataset)) if v is not None)
    title = f"# Runs in {path}" + (f" ({chosen})" if chosen else "")
    return f"{title}\n\n{len(rows)} runs\n\n" + markdown_table(columns, rows)


def diff_table(left: Dict[str, Any], right: Dict[str, Any], names: Tuple[str, str]) -> Tuple[int, str]:
    keys = list(dict.fromkeys([*left, *right]))
    rows = [
        {"key": k, names[0]: _show(left.get(k, "(absent)")), names[1]: _show(right.get(k, "(absent)"))}
        for k in keys
        if left.get(k, "(absent)") != right.get(k, "(absent)")
    ]
    return len(rows), markdown_table(["key", *names], rows) if rows else "(no differences)\n"


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else fmt(value)


# What varies between two runs of one recipe (time, the machine's load, process ids): compared apart,
# after the results, so that the counts and metrics that differ are the first thing read.
TIMING_KEY = re.compile(r"(^|\.)(started|seconds|workers|resources|driver_cpu|executor_nodes)(\.|$)|_per_s$|_s$|rss_mb$|pid$")


def compare_report(a: Path, b: Path) -> str:
    names = ("A", "B")
    stats, hashes = [], []
    for folder in (a, b):
        s = read_stats(folder)
        # The artifact list can run to thousands of shard names: compare its length, and the hashes in one line.
        s["artifacts"] = len(s.get("artifacts") or [])
        hashes.append(s.pop("artifact_sha256", None) or {})
        stats.append(flatten(s))
    n_cfg, cfg_table = diff_table(flatten(read_config(a)), flatten(read_config(b)), names)
    results = [{k: v for k, v in side.items() if not TIMING_KEY.search(k)} for side in stats]
    timings = [{k: v for k, v in side.items() if TIMING_KEY.search(k)} for side in stats]
    n_stats, stats_table = diff_table(results[0], results[1], names)
    n_time, time_table = diff_table(timings[0], timings[1], names)
    differ = sorted(k for k in set(hashes[0]) | set(hashes[1]) if hashes[0].get(k) != hashes[1].get(k))
    if not hashes[0] or not hashes[1]:
        artifacts = "not both runs finished: no artifact hashes to compare"
    elif not differ:
        artifacts = f"the same bytes: all {len(hashes[0])} artifacts have the same sha256"
    else:
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        artifacts = f"{len(differ)} of {len(set(hashes[0]) | set(hashes[1]))} artifacts differ (or are in one run only): {shown}"
    return (
        f"# Compare\n\n- A: {a}\n- B: {b}\n- artifacts: {artifacts}\n\n## Config ({n_cfg} keys differ)\n\n{cfg_table}"
        f"\n## Stats ({n_stats} keys differ)\n\n{stats_table}"
        f"\n## Timings and resources ({n_time} keys differ)\n\n{time_table}"
    )


def plan_report(folder: Path, tokens: float, max_epochs: float) -> str:
    """The mixture plan of a shard run's manifest for a token budget (the shard stage's own plan, another budget)."""
    from stage2.shards.format import SHARDS_DIR, read_manifest
    from stage2.stages.shard import mixture_plan, plan_table

    if tokens <= 0:
        raise Stage2Error(f"report.tokens={tokens:g} must be positive")
    if not (folder / SHARDS_DIR / "manifest.json").is_file():
        raise Stage2Error(f"{folder / SHARDS_DIR / 'manifest.json'}: missing: report.tokens plans a shard run's mixture")
    manifest = read_manifest(folder / SHARDS_DIR)
    if any("validation" not in c for c in manifest["components"]):
        raise Stage2Error(f"{folder / SHARDS_DIR / 'manifest.json'}: made before stage2 wrote a validation split; shard it again to plan it")
    plan = mixture_plan(manifest["components"], int(manifest["seq_len"]), tokens, max_epochs)
    return plan_table({"plan": plan}) + "\n"


def run(cfg: Config, run_dir: Optional[Path]) -> str:
    """`stage2 stage=report`: print the report, and keep it as `run_dir/report.md` when given one (a sweep's
    job; a report run alone writes no folder). A sweep's summary goes into the sweep folder itself."""
    asked = cfg.report
    launch_dir = Path(cfg.launch_dir or os.getcwd())
    resolve = lambda p: Path(p) if os.path.isabs(p) else launch_dir / p  # noqa: E731
    if asked.compare:
        if len(asked.compare) != 2:
            raise Stage2Error(f"report.compare takes two run folders, got {len(asked.compare)}: {list(asked.compare)}")
        a, b = (resolve(p) for p in asked.compare)
        for folder in (a, b):
            if not is_run(folder):
                raise Stage2Error(f"{folder}: not a run folder (no stats.json)")
        text = compare_report(a, b)
    elif asked.dir:
        folder = resolve(asked.dir)
        if not folder.is_dir():
            raise Stage2Error(f"{folder}: report.dir does not exist")
        if is_run(folder):
            text = run_report(folder)
            if asked.tokens is not None:
                text += plan_report(folder, asked.tokens, cfg.shard.max_epochs)
        elif is_sweep(folder):
            text = write_summary(folder) + "\n" + "\n".join(
                f"wrote {folder / f}" for f in SUMMARY_FILES if (folder / f).exists()
            ) + "\n"
        else:
            raise Stage2Error(f"{folder}: neither a run folder (stats.json) nor a stage2 sweep folder (a stage2 multirun.yaml, or 0/, 1/, ... holding stage2 runs)")
    else:
        text = index_report(resolve(cfg.runs_index), launch_dir, asked.stage, asked.dataset)
    if asked.tokens is not None and not (asked.dir and is_run(resolve(asked.dir))):
        raise Stage2Error(f"report.tokens={asked.tokens:g}: give the shard run to plan with report.dir=<run folder>")
    print(text, end="")
    if run_dir is not None:
        atomic_write(Path(run_dir) / "report.md", text)
    return text
