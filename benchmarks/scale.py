"""The filter stage at growing input: driver CPU share, peak RSS per process, worker throughput, spill.

    uv run python -m benchmarks.scale [--scales 1,10,40] [--workers 2] [--keep] [--compress]
        [--max-docs N] [--no-original] [--cache DIR] [--set KEY=VALUE ...]

Input. "1x" is the English dev text of ../shared/data (or $STAGE2_SHARED_DATA): every record of
en_web_stackexchange_dev, en_web_cc_samples_dev and en_foldoc_dev (12,240 documents, about 6.8 MB of
text), all of them, unscreened (the stage's own length screen applies). Copy k (k = 0, 1, ...) is that
text with the words of every sentence shuffled: a sentence ends at a word ending in . ! or ? (closing
quotes and brackets allowed) or at a blank line, whitespace stays where it was (so every document
keeps its exact length and character set), and the shuffle is seeded by xxh64(the sentence's words,
seed=k). A whitespace token of 3 or more dedup words (URLs, paths: one word to the sentence shuffle,
many to near dedup) also has those words shuffled among its punctuation, seeded by the token. Why:
  - copies are distinct: near dedup hashes windows of 13 words, and a window only survives in another
    copy when every sentence it touches got the same order, so copy k is neither an exact nor a near
    duplicate of copy j (the drop counts in the report show it: near_duplicate and duplicate drops
    grow exactly with the number of copies);
  - each copy keeps the original's duplicate structure: identical sentences shuffle identically within
    a copy, so documents that are exact (or near) duplicates in the dev text stay so in every copy;
  - the words, characters and function words are the same, so the length screen and English language
    ID (function-word share, fastText, langdetect: all bag-of-words or character n-grams) judge a copy
    much as the original. The optional reference run on the unperturbed text (on by default) shows how
    much, and the "kept at Sx / (S x kept at 1x)" row checks that copies add kept documents linearly.
Scale S is copies 0..S-1, one JSON-lines file per copy (`--compress`: .jsonl.gz), one component
(`dataset.paths=[<folder>/*.jsonl]`). Copies are generated once into the cache folder
($STAGE2_SCALE_CACHE, else <tmp>/stage2-scale-inputs; keyed by the sources' SHA-256, --max-docs,
--compress and the generator version) and hard-linked into one folder per scale; later runs reuse them.

Run. Per scale, the real CLI as a subprocess, default filter recipe:
    <venv>/bin/stage2 stage=filter progress=false dataset=files 'dataset.paths=[<folder>/*.jsonl]'
        executor.workers=W hydra.run.dir=<work>/<name> runs_index=<work>/runs.jsonl [--set overrides]
Measured from outside:
  - wall: Popen to the driver's exit (os.waitid with WNOWAIT, which leaves the exited driver a zombie);
  - total CPU: user + system seconds of os.wait4's rusage (the driver plus every descendant it reaped);
  - driver CPU: the zombie driver's own utime + stime from /proc/<pid>/stat (exact, 1/CLK_TCK
    resolution, nothing of its children); worker CPU = total CPU - driver CPU;
  - max RSS of any process: wait4's ru_maxrss (on Linux the max over the child and its waited-for
    descendants);
  - per process, every --interval seconds (0.2): the process tree under the driver (/proc/*/task/*/
    children), each process's VmHWM (the kernel's own peak RSS of that process) and utime + stime, and
    the apparent size (st_size) of the spill folder <run>/filtered/.work (--spill-dir) and of the whole
    run folder. Driver peak RSS = the driver's last VmHWM read, worker peak RSS = the largest over its
    descendants (a peak reached in a process's last --interval is missed); the summed last-read CPU of
    the descendants cross-checks total - driver;
  - from the run's stats.json `stages.filter`: records_in, kept, dropped, bytes_in and, when the stage
    reports them, resources.driver_cpu_s, resources.driver_peak_rss_mb, resources.workers_peak_rss_mb,
    dedup.spill_bytes (and the older dedup_state_bytes); a missing key shows as n/a.
Derived: driver CPU share = driver CPU / total CPU; docs/s per worker = documents / worker CPU
seconds (a per-core rate, independent of how many cores were free); text MB = 10^6 bytes of UTF-8 text;
RSS MB = 2^20 bytes (as ru_maxrss / 1024).

Goals (issue 14, point 5), judged on the largest scale run (40x by default) against the one before
(10x) and the smallest (1x): driver CPU share <= 2%; no process above 1 GB (1024 MB) peak RSS at any
scale; peak RSS (the largest process) at 40x within 15% of 10x; docs/s per worker flat from 1x to 40x
(reported as the ratio; "flat" read here as >= 0.90).

Extrapolation (not a measurement): with s = driver CPU / total CPU at the largest scale and c = total
CPU seconds per byte of text there, C = c * 45e9 bytes, and Amdahl's law T(N) = C * (s + (1 - s) / N)
for N = this machine's cores, 8, 64 and 512 workers. It assumes both stay constant at 45 GB, i.e. that
nothing grows with the input beyond what 1x..40x showed, and ignores I/O bandwidth, the network,
start-up and stragglers. The same with marginal costs (least-squares slopes of CPU over text bytes
across scales, which strip the fixed start-up cost) follows it; peak RSS is reported as its growth
between the two largest scales, not extrapolated (a process holds one partition or one bucket).

Writes benchmarks/results/scale.md and scale.json (or $STAGE2_BENCH_RESULTS). Run folders are
deleted afterwards unless --keep. Timings on a shared box are noisy; CPU seconds and RSS much less so.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import xxhash

from benchmarks.common import REPO, child_env, machine, md_table, read_jsonl, shared_data_dir, write_results
from stage2.io.files import file_sha256

SOURCES = ("en_web_stackexchange_dev.jsonl.gz", "en_web_cc_samples_dev.jsonl.gz", "en_foldoc_dev.jsonl.gz")
BIN = Path(sys.executable).parent / "stage2"
# Part of the cache key: bump it whenever perturb() or the record layout changes, so stale copies are not reused.
GENERATOR_VERSION = 2
TARGET_BYTES = 45e9  # FineWeb sample-10BT: about 10B tokens, roughly 45 GB of text (issue 14)
EXTRAPOLATE_WORKERS = (8, 64, 512)
GOAL_DRIVER_SHARE = 0.02
GOAL_MAX_RSS_MB = 1024.0
GOAL_RSS_GROWTH = 1.15
GOAL_FLAT = 0.90  # the issue says "flat"; this is the reading used here
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------------------- inputs

_SPACE = re.compile(r"(\s+)")
# A word that ends a sentence: . ! or ?, then any closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?][\"'’”»)\]}]*$")
# A word as near dedup splits text (stage2's window hashing): a run of ASCII letters, digits and _, or of non-ASCII.
_PIECE = re.compile(r"[0-9A-Za-z_\u0080-\U0010ffff]+")


def _shuffle(words: List[str], start: int, end: int, copy: int) -> None:
    at = [i for i in range(start, end) if words[i]]
    if len(at) < 2:
        return
    span = [words[i] for i in at]
    # Seeded by the sentence itself, not by its position: the same sentence gets the same order wherever
    # it occurs in one copy, so the copy keeps the dev text's own exact and near duplicates.
    seed = xxhash.xxh64_intdigest("\x1f".join(span).encode("utf-8", "surrogatepass"), seed=copy)
    random.Random(seed).shuffle(span)
    for i, word in zip(at, span):
        words[i] = word


def _shuffle_pieces(token: str, copy: int) -> str:
    """A token of 3 or more dedup words (a URL, a path, dotted.names) with those words shuffled in place
    among its punctuation. To near dedup such a token is many words that a sentence shuffle moves as one
    block: documents made mostly of URLs would otherwise stay near duplicates across copies."""
    pieces = _PIECE.findall(token)
    if len(pieces) < 3:
        return token
    between = _PIECE.split(token)  # len(pieces) + 1 runs of punctuation, possibly empty
    random.Random(xxhash.xxh64_intdigest(token.encode("utf-8", "surrogatepass"), seed=copy)).shuffle(pieces)
    return "".join(b + p for b, p in zip(between, pieces)) + between[-1]


def perturb(text: str, copy: int) -> str:
    """`text` with the words of each sentence shuffled (seeded by the sentence and `copy`), and the pieces
    of URL-like tokens too; every run of whitespace and punctuation stays in place, so the length and the
    characters are unchanged."""
    parts = _SPACE.split(text)  # word, space, word, ..., word (empty words only at the two ends)
    words, spaces = parts[0::2], parts[1::2]
    # isalpha: a quick skip for plain words, nearly all of them.
    words = [w if len(w) < 5 or w.isalpha() else _shuffle_pieces(w, copy) for w in words]
    start = 0
    for i, word in enumerate(words):
        if i == len(words) - 1 or _SENTENCE_END.search(word) or spaces[i].count("\n") >= 2:
            _shuffle(words, start, i + 1, copy)
            start = i + 1
    parts[0::2] = words
    return "".join(parts)


class Inputs:
    """The cache of perturbed copies and the per-scale folders that hard-link them."""

    def __init__(self, cache: Path, max_docs: Optional[int], compress: bool) -> None:
        data = shared_data_dir()
        self.sources = [data / name for name in SOURCES]
        self.max_docs, self.compress = max_docs, compress
        self.ext = ".jsonl.gz" if compress else ".jsonl"
        self.params = {
            "generator_version": GENERATOR_VERSION,
            "sources": {p.name: file_sha256(p) for p in self.sources},
            "max_docs": max_docs,
            "compress": compress,
        }
        key = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:12]
        self.root = cache / key
        (self.root / "copies").mkdir(parents=True, exist_ok=True)
        (self.root / "meta").mkdir(exist_ok=True)
        (self.root / "params.json").write_text(json.dumps(self.params, indent=2) + "\n")
        self.generated_s = 0.0
        self.generated: List[int] = []

    def _records(self) -> Any:
        for src in self.sources:
            stem = src.name.split(".")[0]
            for n, rec in enumerate(read_jsonl(src)):
                if self.max_docs is not None and n >= self.max_docs:
                    break
                yield stem, rec

    def _write(self, path: Path, meta_path: Path, copy: Optional[int]) -> Dict[str, Any]:
        """One file: copy `copy` of every record (None: the unperturbed text). Temp name + rename, meta last,
        so an interrupted generation is redone, never reused half-written."""
        tmp = path.with_name(path.name + ".tmp")
        out = gzip.open(tmp, "wt", encoding="utf-8") if self.compress else open(tmp, "w", encoding="utf-8")
        docs = text_bytes = 0
        tag = "orig" if copy is None else f"copy{copy}"
        with out:
            for stem, rec in self._records():
                text = rec["text"] if copy is None else perturb(rec["text"], copy)
                # Ids are unique across the sources and the copies (one component holds them all).
                out.write(json.dumps({"id": f"{stem}/{rec['id']}/{tag}", "text": text}, ensure_ascii=False) + "\n")
                docs += 1
                text_bytes += len(text.encode("utf-8", "surrogatepass"))
        os.replace(tmp, path)
        meta = {"docs": docs, "text_bytes": text_bytes, "file_bytes": path.stat().st_size}
        meta_path.write_text(json.dumps(meta) + "\n")
        return meta

    def _file(self, name: str, copy: Optional[int]) -> Tuple[Path, Dict[str, Any]]:
        path = self.root / "copies" / f"{name}{self.ext}"
        meta_path = self.root / "meta" / f"{name}.json"
        if path.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("file_bytes") == path.stat().st_size:
                return path, meta
        started = time.perf_counter()
        meta = self._write(path, meta_path, copy)
        self.generated_s += time.perf_counter() - started
        if copy is not None:
            self.generated.append(copy)
        return path, meta

    def folder(self, name: str, files: Sequence[Path]) -> Path:
        """`<root>/<name>/` holding exactly `files` (hard links): the glob's folder, and so the component name."""
        folder = self.root / name
        want = {p.name for p in files}
        if folder.exists() and {p.name for p in folder.iterdir()} != want:
            shutil.rmtree(folder)
        folder.mkdir(exist_ok=True)
        for src in files:
            dst = folder / src.name
            if dst.exists() and os.path.samefile(src, dst):
                continue
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(src, dst)
        return folder

    def scale(self, scale: int) -> Tuple[Path, Dict[str, Any]]:
        made = [self._file(f"copy-{k:03d}", k) for k in range(scale)]
        folder = self.folder(f"en_dev_x{scale}", [p for p, _ in made])
        return folder, {
            "files": scale,
            "docs": sum(m["docs"] for _, m in made),
            "text_bytes": sum(m["text_bytes"] for _, m in made),
            "file_bytes": sum(m["file_bytes"] for _, m in made),
        }

    def original(self) -> Tuple[Path, Dict[str, Any]]:
        path, meta = self._file("original", None)
        return self.folder("original", [path]), {"files": 1, **meta}


# ----------------------------------------------------------------------------------------- measuring


def _stat(pid: int) -> Optional[List[str]]:
    """/proc/<pid>/stat fields after the command name (index 0 = state, 1 = ppid, 11/12 = utime/stime,
    13/14 = cutime/cstime, 19 = starttime), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _children(pid: int) -> List[int]:
    kids: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:  # a child started from any thread of pid is listed under that thread
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return kids


def _hwm_kb(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None  # gone, or a zombie (its memory is already released)


def _tree_bytes(path: Path, inner: Path) -> Tuple[int, int]:
    """Apparent bytes of the files under `path`, and of those under `inner` (inside it), in one walk:
    the walk is the sampler's main cost once the spill holds many files."""
    total = under = 0
    inner_s = str(inner)
    stack = [(str(path), str(path) == inner_s)]
    while stack:
        folder, in_inner = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((entry.path, in_inner or entry.path == inner_s))
                        else:
                            size = entry.stat(follow_symlinks=False).st_size
                            total += size
                            under += size if in_inner else 0
                    except FileNotFoundError:  # renamed or deleted while we looked: the stage is running
                        pass
        except (FileNotFoundError, NotADirectoryError):
            pass
    return total, under


class Sampler(threading.Thread):
    """Every `interval` s: peak RSS (VmHWM) and CPU of each process under `root`, and the size of the
    spill folder and of the run folder."""

    def __init__(self, root: int, run_dir: Path, spill_dir: Path, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.run_dir, self.spill_dir, self.interval = root, run_dir, spill_dir, interval
        self.procs: Dict[Tuple[int, str], Dict[str, Any]] = {}  # (pid, starttime): pid reuse-safe
        self.spill_peak = self.run_dir_peak = self.samples = 0
        self.cpu_s = 0.0
        self._halt = threading.Event()

    def sample(self) -> None:
        seen, todo = set(), [self.root]
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            fields = _stat(pid)
            if fields is None:
                continue
            todo += _children(pid)
            entry = self.procs.setdefault((pid, fields[19]), {"pid": pid, "driver": pid == self.root, "hwm_kb": 0, "cpu_s": 0.0})
            entry["cpu_s"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
            hwm = _hwm_kb(pid)
            if hwm is not None:
                entry["hwm_kb"] = max(entry["hwm_kb"], hwm)
        total, spill = _tree_bytes(self.run_dir, self.spill_dir)
        self.spill_peak = max(self.spill_peak, spill)
        self.run_dir_peak = max(self.run_dir_peak, total)
        self.samples += 1

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)
        # The sampler's own CPU, to show it takes little from the cores the stage runs on.
        own = resource.getrusage(resource.RUSAGE_THREAD)
        self.cpu_s = own.ru_utime + own.ru_stime

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def driver(self) -> Dict[str, Any]:
        return next((p for p in self.procs.values() if p["driver"]), {"hwm_kb": 0, "cpu_s": 0.0})

    def workers(self) -> List[Dict[str, Any]]:
        return [p for p in self.procs.values() if not p["driver"]]


def _get(d: Dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def code_env(code: Optional[Path]) -> Dict[str, str]:
    """The child's environment: child_env(), with `code` (an exported revision) ahead of the editable install."""
    env = child_env()
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH", "")) if p)
    return env


def export_revision(rev: str, dest: Path) -> Tuple[Path, str]:
    """`git archive` of stage2/ and conf/ at `rev` into `dest` (read-only for the repository), checked to be
    what `import stage2` then finds."""
    sha = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", sha, "stage2", "conf"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    found = subprocess.run([sys.executable, "-c", "import stage2; print(stage2.__file__)"], env=code_env(dest),
                           cwd=dest.parent, capture_output=True, text=True, check=True).stdout.strip()
    if not found.startswith(str(dest)):
        raise SystemExit(f"--rev {rev}: `import stage2` finds {found}, not the export in {dest}")
    return dest, sha


def run_filter(pattern: str, work: Path, name: str, workers: int, overrides: List[str], spill_rel: str, interval: float,
               code: Optional[Path] = None) -> Dict[str, Any]:
    """One `stage2 stage=filter` run on the glob `pattern`, measured from outside (see the module docstring)."""
    run_dir = work / name
    args = [
        str(BIN), "stage=filter", "progress=false", "dataset=files", f"dataset.paths=[{pattern}]",
        f"executor.workers={workers}", f"hydra.run.dir={run_dir}", f"runs_index={work}/runs.jsonl", *overrides,
    ]
    log_path = work / f"{name}.log"
    with open(log_path, "wb") as log:  # a file, not a pipe: a long run's log must not fill a pipe and stall it
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=work, env=code_env(code), stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid, run_dir, run_dir / spill_rel, interval)
        sampler.start()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: /proc still has its times
        wall = time.perf_counter() - started
        zombie = _stat(proc.pid)
        sampler.stop()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"stage2 {' '.join(args[1:])} failed (exit {proc.returncode}):\n{tail}")
    total_cpu = usage.ru_utime + usage.ru_stime
    driver = sampler.driver()
    if zombie is not None:
        driver_cpu = (int(zombie[11]) + int(zombie[12])) / CLK_TCK
        driver_cpu_how = "exact (/proc stat of the exited driver)"
    else:  # cannot happen on Linux, but then the last sample is a lower bound
        driver_cpu = driver["cpu_s"]
        driver_cpu_how = "last sample (lower bound)"
    stats = json.loads((run_dir / "stats.json").read_text())["stages"]["filter"]
    worker_procs = sampler.workers()
    worker_cpu = total_cpu - driver_cpu
    docs = stats["records_in"]
    spill_stats = _get(stats, "dedup.spill_bytes")
    state_stats = stats.get("dedup_state_bytes")
    return {
        "command": " ".join(["stage2", *args[1:]]),
        "wall_s": round(wall, 2),
        "cpu_s": round(total_cpu, 2),
        "driver_cpu_s": round(driver_cpu, 2),
        "driver_cpu_how": driver_cpu_how,
        "driver_cpu_sampled_s": round(driver["cpu_s"], 2),
        "worker_cpu_s": round(worker_cpu, 2),
        "worker_cpu_sampled_s": round(sum(p["cpu_s"] for p in worker_procs), 2),
        "driver_cpu_share": driver_cpu / total_cpu if total_cpu else None,
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "driver_peak_rss_mb": round(driver["hwm_kb"] / 1024, 1),
        "workers_peak_rss_mb": round(max((p["hwm_kb"] for p in worker_procs), default=0) / 1024, 1),
        "processes": len(sampler.procs),
        "docs_per_worker_cpu_s": docs / worker_cpu if worker_cpu > 0.05 * total_cpu else None,
        "docs_per_cpu_s": docs / total_cpu if total_cpu else None,
        "spill_peak_mb": round(sampler.spill_peak / 1e6, 2),
        "run_dir_peak_mb": round(sampler.run_dir_peak / 1e6, 2),
        "samples": sampler.samples,
        "sampler_cpu_s": round(sampler.cpu_s, 2),
        "records_in": docs,
        "kept": stats["kept"],
        "dropped": stats.get("dropped", {}),
        "bytes_in": stats.get("bytes_in"),
        "stats": {
            "driver_cpu_s": _get(stats, "resources.driver_cpu_s"),
            "driver_peak_rss_mb": _get(stats, "resources.driver_peak_rss_mb"),
            "workers_peak_rss_mb": _get(stats, "resources.workers_peak_rss_mb"),
            "spill_mb": None if spill_stats is None else round(spill_stats / 1e6, 2),
            "dedup_state_mb": None if state_stats is None else round(state_stats / 1e6, 2),
        },
        "run_dir": str(run_dir),
    }


# ----------------------------------------------------------------------------------------- reporting


def _fmt(v: Any, spec: str = ".1f", none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


def _fit(xs: Sequence[float], ys: Sequence[float]) -> Optional[Tuple[float, float]]:
    """Least-squares (intercept, slope) of ys over xs; None with fewer than two distinct xs."""
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def _hms(seconds: float) -> str:
    h, rest = divmod(seconds, 3600)
    return f"{seconds:.0f} s" if seconds < 120 else (f"{rest / 60:.0f} min" if h < 1 else f"{h:.0f} h {rest / 60:.0f} min")


def goals(runs: Dict[int, Dict[str, Any]]) -> List[List[str]]:
    """[measure, value, target, met] rows for issue 14's point 5, on the scales that were run."""
    scales = sorted(runs)
    big, small = scales[-1], scales[0]
    prev = scales[-2] if len(scales) > 1 else None
    note = "" if big == 40 else f" (goal stated at 40x; {big}x is the largest run)"
    rows = []
    share = runs[big]["driver_cpu_share"]
    rows.append([f"driver CPU / all CPU at {big}x{note}", f"{share * 100:.1f}%", f"<= {GOAL_DRIVER_SHARE * 100:g}%", "yes" if share <= GOAL_DRIVER_SHARE else "NO"])
    top = max(max(r["max_rss_mb"], r["driver_peak_rss_mb"], r["workers_peak_rss_mb"]) for r in runs.values())
    where = max(scales, key=lambda s: runs[s]["max_rss_mb"])
    rows.append([f"largest peak RSS of any process, any scale ({where}x)", f"{top:.0f} MB", f"<= {GOAL_MAX_RSS_MB:.0f} MB", "yes" if top <= GOAL_MAX_RSS_MB else "NO"])
    if prev is not None:
        a, b = runs[prev]["max_rss_mb"], runs[big]["max_rss_mb"]
        label = f"peak RSS (largest process) {big}x / {prev}x" + ("" if (prev, big) == (10, 40) else " (goal stated as 40x / 10x)")
        rows.append([label, f"{b / a:.3f} ({a:.0f} -> {b:.0f} MB)", f"<= {GOAL_RSS_GROWTH:g}", "yes" if b / a <= GOAL_RSS_GROWTH else "NO"])
        ra, rb = runs[small]["docs_per_worker_cpu_s"], runs[big]["docs_per_worker_cpu_s"]
        label = f"docs/s per worker {big}x / {small}x" + ("" if (small, big) == (1, 40) else " (goal stated as 40x / 1x)")
        if ra and rb:
            rows.append([label, f"{rb / ra:.3f} ({ra:.0f} -> {rb:.0f})", f">= {GOAL_FLAT:g} (flat)", "yes" if rb / ra >= GOAL_FLAT else "NO"])
        else:
            rows.append([label, "n/a (no worker CPU)", f">= {GOAL_FLAT:g} (flat)", "-"])
    return rows


def extrapolate(runs: Dict[int, Dict[str, Any]], meta: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    big = max(runs)
    r, nbytes = runs[big], meta[big]["text_bytes"]
    s, per_byte = r["driver_cpu_s"] / r["cpu_s"], r["cpu_s"] / nbytes
    counts = [os.cpu_count() or 1, *EXTRAPOLATE_WORKERS]
    out: Dict[str, Any] = {
        "from_scale": big, "serial_fraction": s, "cpu_s_per_mb": per_byte * 1e6, "target_bytes": TARGET_BYTES,
        "cpu_s": per_byte * TARGET_BYTES,
        "wall_s": {str(n): per_byte * TARGET_BYTES * (s + (1 - s) / n) for n in counts},
        "max_speedup": 1 / s if s > 0 else None,
    }
    xs = [meta[k]["text_bytes"] for k in sorted(runs)]
    total_fit = _fit(xs, [runs[k]["cpu_s"] for k in sorted(runs)])
    driver_fit = _fit(xs, [runs[k]["driver_cpu_s"] for k in sorted(runs)])
    if total_fit and driver_fit and total_fit[1] > 0:
        sm = min(max(driver_fit[1] / total_fit[1], 0.0), 1.0)
        c = total_fit[0] + total_fit[1] * TARGET_BYTES
        out["marginal"] = {
            "serial_fraction": sm, "cpu_s_per_mb": total_fit[1] * 1e6, "fixed_cpu_s": total_fit[0], "cpu_s": c,
            "wall_s": {str(n): total_fit[0] + total_fit[1] * TARGET_BYTES * (sm + (1 - sm) / n) for n in counts},
        }
    # Peak RSS is not extrapolated in a line: a worker holds one partition or one bucket (bounded by
    # config), not a share of the input. What the two largest scales show is whether it still grows.
    if len(runs) >= 2:
        small, large = sorted(runs)[-2:]
        out["rss_growth"] = {"from_scale": small, "to_scale": large, **{
            key: runs[large][key] / runs[small][key] for key in ("driver_peak_rss_mb", "workers_peak_rss_mb") if runs[small][key]}}
    return out


def report(args: argparse.Namespace, runs: Dict[int, Dict[str, Any]], meta: Dict[int, Dict[str, Any]],
           original: Optional[Dict[str, Any]], inputs: Inputs, load: Tuple[float, float], revision: str) -> Tuple[str, Dict[str, Any]]:
    scales = sorted(runs)
    table = md_table(
        ["input", "text MB", "documents", "kept", "wall s", "total CPU s", "driver CPU share", "driver peak RSS MB",
         "worker peak RSS MB", "docs/s per worker", "peak spill MB"],
        [[f"{k}x", f"{meta[k]['text_bytes'] / 1e6:.1f}", r["records_in"], r["kept"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}",
          f"{r['driver_cpu_share'] * 100:.1f}% ({r['driver_cpu_s']:.1f} s)", f"{r['driver_peak_rss_mb']:.0f}",
          f"{r['workers_peak_rss_mb']:.0f}", _fmt(r["docs_per_worker_cpu_s"], ".0f"), f"{r['spill_peak_mb']:.1f}"]
         for k, r in sorted(runs.items())],
    )
    cross = md_table(
        ["input", "driver CPU s: exact / last sample / stats.json", "worker CPU s: total - driver / sum of samples",
         "max RSS MB (wait4)", "driver peak RSS MB: VmHWM / stats.json", "worker peak RSS MB: VmHWM / stats.json",
         "spill MB: peak sampled / stats.json", "dedup state MB (stats.json)", "run folder peak MB", "processes", "samples (sampler CPU s)"],
        [[f"{k}x", f"{r['driver_cpu_s']:.2f} / {r['driver_cpu_sampled_s']:.2f} / {_fmt(r['stats']['driver_cpu_s'], '.2f')}",
          f"{r['worker_cpu_s']:.1f} / {r['worker_cpu_sampled_s']:.1f}", f"{r['max_rss_mb']:.0f}",
          f"{r['driver_peak_rss_mb']:.0f} / {_fmt(r['stats']['driver_peak_rss_mb'], '.0f')}",
          f"{r['workers_peak_rss_mb']:.0f} / {_fmt(r['stats']['workers_peak_rss_mb'], '.0f')}",
          f"{r['spill_peak_mb']:.1f} / {_fmt(r['stats']['spill_mb'])}", _fmt(r["stats"]["dedup_state_mb"]),
          f"{r['run_dir_peak_mb']:.0f}", r["processes"], f"{r['samples']} ({r['sampler_cpu_s']:.1f})"]
         for k, r in sorted(runs.items())],
    )
    # Copies must add kept documents linearly: each is as screenable as copy 0 and none is a duplicate of another.
    base = scales[0]
    reasons = sorted({reason for r in runs.values() for reason in r["dropped"]})
    linear_rows = []
    for k in scales:
        f = k / base
        kept_ratio = runs[k]["kept"] / (f * runs[base]["kept"]) if runs[base]["kept"] else None
        drops = [f"{runs[k]['dropped'].get(x, 0)} ({f * runs[base]['dropped'].get(x, 0):.0f})" for x in reasons]
        linear_rows.append([f"{k}x", runs[k]["kept"], _fmt(kept_ratio, ".4f"), *drops])
    linear = md_table(["input", "kept", f"kept / (S/{base} x kept at {base}x)", *[f"{x} (expected)" for x in reasons]], linear_rows)
    goal_rows = goals(runs)
    ex = extrapolate(runs, meta)
    counts = list(ex["wall_s"])
    ex_rows = [[f"{n} workers" + (f" (this machine's {n} cores)" if i == 0 else ""), _hms(ex["wall_s"][n]),
                _hms(ex["marginal"]["wall_s"][n]) if "marginal" in ex else "n/a"] for i, n in enumerate(counts)]
    ex_table = md_table(["workers N", f"T(N), s and c at {ex['from_scale']}x", "T(N), marginal s and c (fit over scales)"], ex_rows)
    made = sorted(inputs.generated)
    gen = (f"generated {len(made)} cop{'y' if len(made) == 1 else 'ies'} ({made[0]}..{made[-1]}) in {inputs.generated_s:.0f} s" if made
           else "all copies reused from the cache") + f" (`{inputs.root}`)"
    sets = f" {' '.join('--set ' + s for s in args.set)}" if args.set else ""
    command = (f"uv run python -m benchmarks.scale --scales {','.join(map(str, scales))} --workers {args.workers}"
               + (f" --max-docs {args.max_docs}" if args.max_docs is not None else "") + (" --compress" if args.compress else "")
               + (" --no-original" if args.no_original else "") + (f" --rev {args.rev}" if args.rev else "") + sets)
    text = (
        "# The filter stage at scale (benchmarks/scale.py)\n\n"
        f"Machine: {machine()}, shared with other jobs (1-minute load {load[0]:.1f} at the start, {load[1]:.1f} at the end). "
        f"git {revision}.\nCommand: `{command}`. Default filter recipe, `executor.workers={args.workers}`, "
        f"{'gzip' if args.compress else 'uncompressed'} JSON lines, one file per copy; {gen}.\n"
        "Input: S perturbed copies of the English dev text (words shuffled within each sentence, and the pieces of URL-like tokens; "
        "seeded by the copy and the sentence or token) "
        f"({', '.join(SOURCES)}{'; the first %d records of each' % args.max_docs if args.max_docs is not None else ''}). "
        "How each figure is measured: the module docstring.\n\n"
        f"{table}\n\n"
        "Driver CPU share = the driver process's own CPU / all CPU of the run (driver + reaped workers, os.wait4). "
        "Docs/s per worker = documents / worker CPU seconds, worker start-up (imports, language models) included, which "
        "weighs most at the smallest scale. Peak RSS: the kernel's VmHWM per process, read every "
        f"{args.interval} s; peak spill: the largest size of `<run>/{args.spill_dir}` seen at those reads.\n\n"
        "Time per scale, CLI wall (+ generating copies not in the cache): "
        + ", ".join(f"{k}x {runs[k]['wall_s']:.0f} s" + (f" (+ {meta[k]['generation_s']:.0f} s)" if meta[k]["generation_s"] else "") for k in scales)
        + ". Wall time depends on what else the shared box runs; CPU seconds and RSS hardly do.\n\n"
        "## Goals (issue 14, point 5)\n\n" + md_table(["measure", "value", "target", "met"], goal_rows) + "\n\n"
        "## Cross-checks: outside measures against the stage's own stats.json\n\n" + cross + "\n\n"
        "n/a: the stage does not report that key (yet).\n\n"
        "## Are the copies distinct and as screenable as the original?\n\n" + linear + "\n\n"
        "Expected = the smallest scale's count times the scale ratio. A copy that were an exact or near duplicate of another "
        "would show as duplicate or near_duplicate drops above the expected count. Language drops may differ a little: "
        "each copy is shuffled differently, and the detectors' verdicts on borderline documents with it.\n"
    )
    if original:
        o = original
        p = runs.get(1)
        text += (f"\nUnperturbed dev text (reference run, one file): {o['records_in']} documents, {o['kept']} kept "
                 f"({o['kept'] / o['records_in'] * 100:.1f}%), dropped {dict((k, v) for k, v in o['dropped'].items() if v)}; "
                 + (f"copy 0 alone (1x): {p['kept']} kept ({p['kept'] / p['records_in'] * 100:.1f}%), dropped {dict((k, v) for k, v in p['dropped'].items() if v)}. "
                    if p else "")
                 + f"Wall {o['wall_s']:.0f} s, {o['cpu_s']:.0f} CPU s.\n")
    text += (
        f"\n## Extrapolation to {TARGET_BYTES / 1e9:.0f} GB of text (an extrapolation, not a measurement)\n\n"
        f"Serial fraction s = driver CPU / all CPU at {ex['from_scale']}x = {ex['serial_fraction'] * 100:.1f}%; "
        f"CPU cost c = {ex['cpu_s_per_mb']:.2f} CPU s per MB of text, so C = {_hms(ex['cpu_s'])} of CPU for {TARGET_BYTES / 1e9:.0f} GB. "
        f"Amdahl: T(N) = C (s + (1 - s) / N); at most {_fmt(ex['max_speedup'], '.0f', 'unbounded')}x one worker, however many workers.\n\n"
        f"{ex_table}\n\n"
    )
    if "marginal" in ex:
        m = ex["marginal"]
        text += (f"Marginal: slopes of CPU over text bytes across {', '.join(f'{k}x' for k in scales)}: "
                 f"{m['cpu_s_per_mb']:.2f} CPU s per MB, driver share of the slope {m['serial_fraction'] * 100:.1f}%, "
                 f"fixed {m['fixed_cpu_s']:.1f} CPU s. ")
    if "rss_growth" in ex:
        g = ex["rss_growth"]
        text += (f"Peak RSS is not extrapolated: a process holds one partition or one hash bucket (`filter.dedup.memory_mb`), "
                 f"not a share of the input. From {g['from_scale']}x to {g['to_scale']}x of input it changed "
                 f"{_fmt(g.get('driver_peak_rss_mb'), '.2f')}x (driver) and {_fmt(g.get('workers_peak_rss_mb'), '.2f')}x (largest worker). ")
    text += ("These assume the serial fraction and the cost per byte stay as measured, and ignore I/O bandwidth, the network, "
             "scheduling, stragglers and start-up of many workers; a component that grows with the input (e.g. a driver "
             "holding state per document) makes them optimistic.\n")
    headline = {
        "command": command, "git": revision, "workers": args.workers, "compress": args.compress, "max_docs": args.max_docs,
        "overrides": args.set, "rev": args.rev, "load_start": load[0], "load_end": load[1], "cache": str(inputs.root),
        "generated_copies": inputs.generated, "generation_s": round(inputs.generated_s, 1),
        "scales": {f"{k}x": {**meta[k], **runs[k]} for k in scales},
        "original": original,
        "goals": [dict(zip(["measure", "value", "target", "met"], row)) for row in goal_rows],
        "extrapolation": ex,
    }
    return text, headline


def git_state() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    # The working tree is what the CLI runs (editable install): say when it is not the commit.
    changed = git("status", "--porcelain", "--", "stage2", "conf").splitlines()
    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + (f" with {len(changed)} uncommitted path(s) under stage2/ and conf/" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10,40", help="comma-separated copy counts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the run folders (their path is printed)")
    parser.add_argument("--compress", action="store_true", help="write the copies as .jsonl.gz")
    parser.add_argument("--max-docs", type=int, default=None, help="the first N records of each source (smoke tests)")
    parser.add_argument("--no-original", action="store_true", help="skip the reference run on the unperturbed text")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("STAGE2_SCALE_CACHE") or Path(tempfile.gettempdir()) / "stage2-scale-inputs"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every stage2 run (repeatable)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between /proc samples")
    parser.add_argument("--rev", default=None, help="run the stage2 code of this git revision (exported to a temp folder) instead of the working tree")
    parser.add_argument("--spill-dir", default="filtered/.work", help="the spill folder, relative to the run folder")
    args = parser.parse_args()
    scales = sorted({int(s) for s in args.scales.split(",") if s.strip()})
    if not scales or scales[0] < 1:
        raise SystemExit("--scales: positive integers, e.g. 1,10,40")
    if not BIN.exists():
        raise SystemExit(f"{BIN} not found: run through `uv run` in the checkout")

    inputs = Inputs(args.cache, args.max_docs, args.compress)
    work = Path(tempfile.mkdtemp(prefix="stage2-scale-"))
    revision, code = git_state(), None
    load_start = os.getloadavg()[0]
    runs: Dict[int, Dict[str, Any]] = {}
    meta: Dict[int, Dict[str, Any]] = {}
    original = None
    try:
        if args.rev:
            code, sha = export_revision(args.rev, work / "code")
            revision = f"{sha} (--rev {args.rev}: stage2/ and conf/ exported with git archive, not the working tree)"
        if not args.no_original:
            folder, m = inputs.original()
            print(f"[scale] original text: {m['docs']} docs, {m['text_bytes'] / 1e6:.1f} MB ...", file=sys.stderr, flush=True)
            original = {**m, **run_filter(f"{folder}/*{inputs.ext}", work, "original", args.workers, args.set, args.spill_dir, args.interval, code)}
            print(f"[scale] original: {original['wall_s']:.0f} s wall", file=sys.stderr, flush=True)
        for k in scales:
            before = inputs.generated_s
            folder, meta[k] = inputs.scale(k)
            made = meta[k]["generation_s"] = round(inputs.generated_s - before, 1)
            print(f"[scale] {k}x: {meta[k]['docs']} docs, {meta[k]['text_bytes'] / 1e6:.1f} MB of text"
                  + (f" ({made:.0f} s to generate new copies)" if made else " (inputs cached)") + " ...", file=sys.stderr, flush=True)
            runs[k] = run_filter(f"{folder}/*{inputs.ext}", work, f"x{k}", args.workers, args.set, args.spill_dir, args.interval, code)
            r = runs[k]
            print(f"[scale] {k}x: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU s, driver {r['driver_cpu_share'] * 100:.1f}%, "
                  f"max RSS {r['max_rss_mb']:.0f} MB, kept {r['kept']}", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"[scale] run folders kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if not args.keep:  # deleted: do not point at them from the results
        for r in [*runs.values(), *([original] if original else [])]:
            r.pop("run_dir", None)
    text, headline = report(args, runs, meta, original, inputs, (load_start, os.getloadavg()[0]), revision)
    print(text)
    write_results("scale", text, headline)


if __name__ == "__main__":
    main()
