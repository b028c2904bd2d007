"""The whole pipeline at growing input: per stage wall, CPU, driver share, peak RSS, scratch and output disk.

    uv run python -m benchmarks.scale [--scales 1,10,40,150] [--workers 2] [--keep] [--compress]
        [--max-docs N] [--cache DIR] [--work DIR] [--set KEY=VALUE ...] [--from-json scale.json ...]
        [--stages tokenizer --rows-from scale.json]
    uv run python -m benchmarks.scale --driver-ab REV [--scales 1,10] [--stages filter,tokenizer,shard] [--repeat 5]

Per scale, three CLI runs, each measured alone: `stage=filter` (default recipe), then
`stage=tokenizer tokenizer.input_run=<the filter run>`, then `stage=shard shard.input_run=<the filter
run> shard.tokenizer=<the tokenizer run>`. Results are written after every scale (a stopped run keeps
what it measured); `--from-json` rewrites the report from saved scale.json files without running
anything, merging the scales of several invocations (the report says so). `--stages tokenizer`
measures only that stage (the filter still runs, as its input) and keeps the other stages' rows from
`--rows-from`, a scale.json of an earlier invocation (the report names it and its git revision).

`--driver-ab REV` measures only driver CPU: per scale `--repeat` rounds of the stages in `--stages`
(filter, tokenizer, shard; the later two on one filter run of the working tree) with the code of REV
and with the working tree's, alternating which goes first; it prints a table of every round's driver
CPU and the medians (nothing is written to the results).

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
    much as the original; the "kept at Sx / (S x kept at 1x)" row checks that copies add kept
    documents linearly.
Scale S is copies 0..S-1, one JSON-lines file per copy (`--compress`: .jsonl.gz), one component
(`dataset.paths=[<folder>/*.jsonl]`). Copies are generated once into the cache folder
($STAGE2_SCALE_CACHE, else <tmp>/stage2-scale-inputs; keyed by the sources' SHA-256, --max-docs,
--compress and the generator version) and hard-linked into one folder per scale; later runs reuse them.

Run. Per scale and stage, the real CLI as a subprocess:
    <venv>/bin/stage2 stage=<stage> progress=false dataset=files 'dataset.paths=[<folder>/*.jsonl]'
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
    the apparent size (st_size) of the stage's scratch folder (the filter's <run>/filtered/.work, the
    shard stage's <run>/shards/<component>/.work) and of the whole run folder. Driver peak RSS = the
    driver's last VmHWM read, worker peak RSS = the largest over its descendants (a peak reached in a
    process's last --interval is missed);
  - from the run's stats.json: the filter's records_in, kept, dropped, bytes_in, resources and
    dedup.spill_bytes; the tokenizer's docs_seen per component, sample, seconds and resources (the
    driver's CPU by phase: sample, train, evaluate; its sampling tasks and passes); the shard stage's
    records and tokens per component. Output = the size of filtered/, tokenizer/ or shards/ at the end.
Derived: driver CPU share = driver CPU / total CPU (the tokenizer's sampling share: its driver CPU while
sampling / that + worker CPU); docs/s per worker = documents the stage read / worker CPU seconds (a
per-core rate, independent of how many cores were free); text MB = 10^6 bytes of UTF-8 text; RSS MB =
2^20 bytes (as ru_maxrss / 1024).

Goals (issue 25, point 3), judged at the largest scale run, per stage: driver CPU share <= 2% (also
reported: the marginal share, slope of driver CPU over bytes / slope of all CPU, which strips start-up,
and for the tokenizer the share of sampling alone: its training is serial by design and fixed by the
sample); no process above 1 GB (1024 MB) peak RSS at any scale; docs/s per worker within 15% of 1x.

Extrapolation (not a measurement), per stage: T(N) = fixed + C * (s + (1 - s) / N) with C = c * 45e9
bytes, for N = this machine's cores, 8, 64 and 512 workers; c and s marginal (least-squares slopes over
the scales) where there are two scales or more, `fixed` the fit's intercept (plus the tokenizer's
training and evaluation), counted as serial. It assumes nothing grows with the input beyond what the
scales showed, and ignores I/O bandwidth, the network, start-up of many workers and stragglers.

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
GOAL_WITHIN = 0.15  # per-worker throughput at the largest scale within 15% of 1x
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
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")  # (two generators of one copy write the same bytes)
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


STAGES = ("filter", "tokenizer", "shard")


def measure(args: List[str], work: Path, name: str, run_dir: Path, spill_rel: Optional[str], interval: float,
            code: Optional[Path] = None) -> Dict[str, Any]:
    """One `stage2` CLI run to its end, measured from outside (see the module docstring)."""
    log_path = work / f"{name}.log"
    with open(log_path, "wb") as log:  # a file, not a pipe: a long run's log must not fill a pipe and stall it
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=work, env=code_env(code), stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid, run_dir, run_dir / (spill_rel or ".no-spill"), interval)
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
    worker_procs = sampler.workers()
    return {
        "command": " ".join(["stage2", *args[1:]]),
        "wall_s": round(wall, 2),
        "cpu_s": round(total_cpu, 2),
        "driver_cpu_s": round(driver_cpu, 2),
        "driver_cpu_how": driver_cpu_how,
        "driver_cpu_sampled_s": round(driver["cpu_s"], 2),
        "worker_cpu_s": round(total_cpu - driver_cpu, 2),
        "worker_cpu_sampled_s": round(sum(p["cpu_s"] for p in worker_procs), 2),
        "driver_cpu_share": driver_cpu / total_cpu if total_cpu else None,
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "driver_peak_rss_mb": round(driver["hwm_kb"] / 1024, 1),
        "workers_peak_rss_mb": round(max((p["hwm_kb"] for p in worker_procs), default=0) / 1024, 1),
        "processes": len(sampler.procs),
        "spill_peak_mb": round(sampler.spill_peak / 1e6, 2) if spill_rel else None,
        "run_dir_peak_mb": round(sampler.run_dir_peak / 1e6, 2),
        "samples": sampler.samples,
        "sampler_cpu_s": round(sampler.cpu_s, 2),
        "run_dir": str(run_dir),
    }


def _base_args(stage: str, pattern: str, work: Path, run_dir: Path, workers: int, overrides: List[str]) -> List[str]:
    return [
        str(BIN), f"stage={stage}", "progress=false", "dataset=files", f"dataset.paths=[{pattern}]",
        f"executor.workers={workers}", f"hydra.run.dir={run_dir}", f"runs_index={work}/runs.jsonl", *overrides,
    ]


def _per_worker(r: Dict[str, Any], docs: int, text_bytes: Optional[int], worker_cpu: float) -> None:
    """Documents (and MB of text) per worker CPU second: a per-core rate, whatever the cores free."""
    ok = worker_cpu > 0.05 * r["cpu_s"]
    r["docs_per_worker_cpu_s"] = docs / worker_cpu if ok else None
    r["mb_per_worker_cpu_s"] = text_bytes / 1e6 / worker_cpu if ok and text_bytes else None


def run_filter(pattern: str, work: Path, name: str, workers: int, overrides: List[str], spill_rel: str, interval: float,
               code: Optional[Path] = None) -> Dict[str, Any]:
    """One `stage2 stage=filter` run on the glob `pattern`, measured from outside (see the module docstring)."""
    run_dir = work / name
    r = measure(_base_args("filter", pattern, work, run_dir, workers, overrides), work, name, run_dir, spill_rel, interval, code)
    stats = json.loads((run_dir / "stats.json").read_text())["stages"]["filter"]
    docs = stats["records_in"]
    spill_stats = _get(stats, "dedup.spill_bytes")
    state_stats = stats.get("dedup_state_bytes")
    _per_worker(r, docs, stats.get("bytes_in"), r["worker_cpu_s"])
    r.update({
        "docs_per_cpu_s": docs / r["cpu_s"] if r["cpu_s"] else None,
        "records_in": docs,
        "docs": docs,
        "kept": stats["kept"],
        "dropped": stats.get("dropped", {}),
        "bytes_in": stats.get("bytes_in"),
        "bytes_out": stats.get("bytes_out"),
        "output_mb": round(_tree_bytes(run_dir / "filtered", run_dir / "filtered" / ".work")[0] / 1e6, 2),
        "stats": {
            "driver_cpu_s": _get(stats, "resources.driver_cpu_s"),
            "driver_peak_rss_mb": _get(stats, "resources.driver_peak_rss_mb"),
            "workers_peak_rss_mb": _get(stats, "resources.workers_peak_rss_mb"),
            "spill_mb": None if spill_stats is None else round(spill_stats / 1e6, 2),
            "dedup_state_mb": None if state_stats is None else round(state_stats / 1e6, 2),
        },
    })
    return r


def run_tokenizer(pattern: str, filtered: Path, work: Path, name: str, workers: int, overrides: List[str], interval: float,
                  code: Optional[Path] = None) -> Dict[str, Any]:
    """`stage2 stage=tokenizer tokenizer.input_run=<the filter run>`: sample the parts, train, evaluate."""
    run_dir = work / name
    args = _base_args("tokenizer", pattern, work, run_dir, workers, [f"tokenizer.input_run={filtered}", *overrides])
    r = measure(args, work, name, run_dir, None, interval, code)
    stats = json.loads((run_dir / "stats.json").read_text())["stages"]["tokenizer"]
    docs = sum(c["docs_seen"] for c in stats["components"].values())
    res = stats.get("resources") or {}
    driver_phases = res.get("driver_cpu_s") or {}
    sample_driver = driver_phases.get("sample")
    # Sampling is the part that grows with the input: its driver share is the one that matters at scale.
    # Training and evaluation tasks (a cost fixed by the sample) ran in workers when the training task's
    # process is not the driver's: their CPU is not sampling's.
    train = res.get("train_task") or {}
    fixed_tasks = train.get("cpu_s", 0.0) + res.get("evaluate_tasks_cpu_s", 0.0) if train and train.get("pid") != res.get("driver_pid") else 0.0
    sample_workers = r["worker_cpu_s"] - fixed_tasks
    _per_worker(r, docs, None, sample_workers)
    r.update({
        "docs": docs,
        "sample_docs": stats["sample"]["docs"],
        "seconds": stats.get("seconds"),
        "driver_cpu_phases": driver_phases,
        "sample_driver_share": sample_driver / (sample_driver + sample_workers) if sample_driver is not None and sample_driver + sample_workers > 0 else None,
        "train_eval_worker_cpu_s": fixed_tasks,
        "sample_passes": res.get("sample_passes"),
        "sample_tasks": res.get("sample_tasks"),
        "output_mb": round(_tree_bytes(run_dir / "tokenizer", run_dir)[0] / 1e6, 2),
        "run_dir": str(run_dir),
    })
    return r


def run_shard(pattern: str, filtered: Path, tokenizer: Path, component: str, work: Path, name: str, workers: int,
              overrides: List[str], interval: float, code: Optional[Path] = None) -> Dict[str, Any]:
    """`stage2 stage=shard shard.input_run=<the filter run> shard.tokenizer=<the tokenizer run>`."""
    run_dir = work / name
    args = _base_args("shard", pattern, work, run_dir, workers, [f"shard.input_run={filtered}", f"shard.tokenizer={tokenizer}", *overrides])
    r = measure(args, work, name, run_dir, f"shards/{component}/.work", interval, code)
    stats = json.loads((run_dir / "stats.json").read_text())["stages"]["shard"]
    comps = stats.get("components", {}).values()
    docs = sum(c.get("records", 0) for c in comps)
    _per_worker(r, docs, None, r["worker_cpu_s"])
    r.update({
        "docs": docs,
        "tokens": sum(c.get("tokens", 0) for c in comps),
        "output_mb": round(_tree_bytes(run_dir / "shards", run_dir / "shards" / component / ".work")[0] / 1e6, 2),
    })
    return r


def run_pipeline(pattern: str, work: Path, name: str, workers: int, overrides: List[str], interval: float,
                 code: Optional[Path] = None) -> Dict[str, Any]:
    """`stage2 stage=pipeline`: the three stages in one CLI run, so one start-up; per stage, the CPU of its
    driver and of its tasks as the run's stats.json records them (`driver_cpu`)."""
    run_dir = work / name
    r = measure(_base_args("pipeline", pattern, work, run_dir, workers, overrides), work, name, run_dir, None, interval, code)
    cpu = json.loads((run_dir / "stats.json").read_text())["driver_cpu"]
    r.update({"start_up_s": cpu["start_up_s"], "stages": cpu["stages"]})
    return r


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
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def goals(runs: Dict[str, Dict[int, Dict[str, Any]]], meta: Dict[int, Dict[str, Any]]) -> List[List[str]]:
    """[stage, measure, value, target, met] rows (issue 25, point 3) at the largest scale run."""
    rows = []
    for stage in STAGES:
        by_scale = runs[stage]
        scales = sorted(by_scale)
        big, small = scales[-1], scales[0]
        r = by_scale[big]
        share = r["driver_cpu_share"]
        rows.append([stage, f"driver CPU / all CPU at {big}x", f"{share * 100:.1f}%", f"<= {GOAL_DRIVER_SHARE * 100:g}%",
                     "yes" if share <= GOAL_DRIVER_SHARE else "NO"])
        if stage == "tokenizer" and r.get("sample_driver_share") is not None:
            s = r["sample_driver_share"]
            rows.append([stage, f"sampling only: driver CPU / sampling CPU at {big}x", f"{s * 100:.1f}%",
                         f"<= {GOAL_DRIVER_SHARE * 100:g}%", "yes" if s <= GOAL_DRIVER_SHARE else "NO"])
        marginal = (extrapolate(runs, meta)["stages"][stage].get("marginal") or {}).get("serial_fraction")
        if marginal is not None:
            what = "of sampling CPU" if stage == "tokenizer" else "of all CPU"
            rows.append([stage, f"marginal driver share (slope of driver CPU / slope {what}, {', '.join(f'{k}x' for k in scales)})",
                         f"{marginal * 100:.2f}%", f"<= {GOAL_DRIVER_SHARE * 100:g}%", "yes" if marginal <= GOAL_DRIVER_SHARE else "NO"])
        top = max(max(x["max_rss_mb"], x["driver_peak_rss_mb"], x["workers_peak_rss_mb"]) for x in by_scale.values())
        where = max(scales, key=lambda k: max(by_scale[k]["max_rss_mb"], by_scale[k]["driver_peak_rss_mb"]))
        rows.append([stage, f"largest peak RSS of any process, any scale ({where}x)", f"{top:.0f} MB", f"<= {GOAL_MAX_RSS_MB:.0f} MB",
                     "yes" if top <= GOAL_MAX_RSS_MB else "NO"])
        if big != small:
            ra, rb = by_scale[small]["docs_per_worker_cpu_s"], by_scale[big]["docs_per_worker_cpu_s"]
            if ra and rb:
                rows.append([stage, f"docs/s per worker {big}x / {small}x", f"{rb / ra:.3f} ({ra:.0f} -> {rb:.0f})",
                             f">= {1 - GOAL_WITHIN:g}", "yes" if rb / ra >= 1 - GOAL_WITHIN else "NO"])
            else:
                rows.append([stage, f"docs/s per worker {big}x / {small}x", "n/a (no worker CPU)", f">= {1 - GOAL_WITHIN:g}", "-"])
    pipelines = runs.get("pipeline") or {}
    if pipelines:
        big = max(pipelines)
        p = pipelines[big]
        for stage in STAGES:
            share = p["stages"][stage]["driver_share"]
            rows.append([stage, f"in one pipeline run: the stage's driver CPU / its driver + task CPU at {big}x", f"{share * 100:.1f}%",
                         f"<= {GOAL_DRIVER_SHARE * 100:g}%", "yes" if share <= GOAL_DRIVER_SHARE else "NO"])
        share = p["driver_cpu_share"]
        rows.append(["pipeline", f"the whole run: driver CPU (start-up included) / all CPU at {big}x", f"{share * 100:.1f}%",
                     f"<= {GOAL_DRIVER_SHARE * 100:g}%", "yes" if share <= GOAL_DRIVER_SHARE else "NO"])
    return rows


def extrapolate(runs: Dict[str, Dict[int, Dict[str, Any]]], meta: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    """Per stage, from the largest scale: C = CPU per byte x 45 GB, T(N) = fixed + C (s + (1 - s) / N).

    The tokenizer's driver CPU outside sampling (start-up, training, evaluation) is a fixed serial cost:
    its sample does not grow with the input. Everything else is scaled by bytes.
    """
    counts = [os.cpu_count() or 1, *EXTRAPOLATE_WORKERS]
    out: Dict[str, Any] = {"target_bytes": TARGET_BYTES, "workers": counts, "stages": {}}
    total = {str(n): 0.0 for n in counts}
    for stage in STAGES:
        big = max(runs[stage])
        r, nbytes = runs[stage][big], meta[big]["text_bytes"]
        fixed = 0.0
        driver, cpu = r["driver_cpu_s"], r["cpu_s"]
        if stage == "tokenizer" and r.get("driver_cpu_phases"):
            # Everything of the driver's but its sampling (start-up, training, evaluation) is fixed, and so
            # are the training and evaluation tasks when they ran in workers.
            fixed = driver - r["driver_cpu_phases"].get("sample", 0.0)
            driver, cpu = driver - fixed, cpu - fixed - r.get("train_eval_worker_cpu_s", 0.0)
            fixed += r.get("train_eval_worker_cpu_s", 0.0)
        s, per_byte = max(driver, 0.0) / cpu if cpu > 0 else 0.0, cpu / nbytes
        wall = {str(n): fixed + per_byte * TARGET_BYTES * (s + (1 - s) / n) for n in counts}
        out["stages"][stage] = {
            "from_scale": big, "serial_fraction": s, "cpu_s_per_mb": per_byte * 1e6, "fixed_serial_cpu_s": fixed,
            "cpu_s": fixed + per_byte * TARGET_BYTES, "wall_s": wall, "max_speedup": 1 / s if s > 0 else None,
        }
        # Marginal: slopes over the scales (least squares), which strip what every run pays once (start-up).
        xs = [meta[k]["text_bytes"] for k in sorted(runs[stage])]
        if stage == "tokenizer" and all(runs[stage][k].get("driver_cpu_phases") for k in runs[stage]):
            # Sampling only: the training's cost grows with the sample until it reaches its quota, then stays.
            drivers = [runs[stage][k]["driver_cpu_phases"]["sample"] for k in sorted(runs[stage])]
            totals = [d + runs[stage][k]["worker_cpu_s"] - runs[stage][k].get("train_eval_worker_cpu_s", 0.0) for d, k in zip(drivers, sorted(runs[stage]))]
        else:
            drivers = [runs[stage][k]["driver_cpu_s"] for k in sorted(runs[stage])]
            totals = [runs[stage][k]["cpu_s"] for k in sorted(runs[stage])]
        total_fit, driver_fit = _fit(xs, totals), _fit(xs, drivers)
        if total_fit and driver_fit and total_fit[1] > 0:
            sm = min(max(driver_fit[1] / total_fit[1], 0.0), 1.0)
            # The intercepts (start-up, and for the tokenizer its training) count as serial: an upper bound.
            fixed_m = max(total_fit[0], 0.0) + (fixed if stage == "tokenizer" else 0.0)
            wall_m = {str(n): fixed_m + total_fit[1] * TARGET_BYTES * (sm + (1 - sm) / n) for n in counts}
            out["stages"][stage]["marginal"] = {
                "serial_fraction": sm, "cpu_s_per_mb": total_fit[1] * 1e6,
                "fixed_cpu_s": fixed_m, "driver_fixed_cpu_s": driver_fit[0], "wall_s": wall_m,
            }
            wall = wall_m
            out["stages"][stage]["wall_s_basis"] = "marginal"
        out["stages"][stage]["wall_s"] = wall
    for stage in STAGES:
        for n, v in out["stages"][stage]["wall_s"].items():
            total[n] += v
    out["pipeline_wall_s"] = total
    return out


def report(args: argparse.Namespace, runs: Dict[str, Dict[int, Dict[str, Any]]], meta: Dict[int, Dict[str, Any]],
           inputs: Inputs, load: Tuple[float, float], revision: str) -> Tuple[str, Dict[str, Any]]:
    scales = sorted(meta)
    rows = []
    for stage in STAGES:
        for k in scales:
            r = runs[stage].get(k)
            if r is None:
                continue
            share = f"{r['driver_cpu_share'] * 100:.1f}% ({r['driver_cpu_s']:.1f} s)"
            if stage == "tokenizer" and r.get("sample_driver_share") is not None:
                share += f"; sampling {r['sample_driver_share'] * 100:.1f}%"
            rows.append([stage, f"{k}x", f"{meta[k]['text_bytes'] / 1e6:.0f}", r["docs"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", share,
                         f"{r['driver_peak_rss_mb']:.0f}", f"{r['workers_peak_rss_mb']:.0f}",
                         _fmt(r["spill_peak_mb"], ".0f", "-"), _fmt(r.get("output_mb"), ".1f"),
                         _fmt(r["docs_per_worker_cpu_s"], ".0f"),
                         _fmt(meta[k]["text_bytes"] / 1e6 / r["worker_cpu_s"] if r["worker_cpu_s"] > 0 else None, ".2f")])
    table = md_table(
        ["stage", "input", "input text MB", "documents", "wall s", "total CPU s", "driver CPU share", "driver peak RSS MB",
         "worker peak RSS MB", "scratch peak MB", "output MB", "docs/s per worker", "input MB per worker CPU s"], rows)
    tok_rows = []
    for k in scales:
        r = runs["tokenizer"].get(k)
        if r is None:
            continue
        ph = r.get("driver_cpu_phases") or {}
        sec = r.get("seconds") or {}
        tok_rows.append([f"{k}x", r["docs"], r["sample_docs"], _fmt(r.get("sample_tasks"), "d"), _fmt(r.get("sample_passes"), "d"),
                         f"{sec.get('sample', 0):.1f} / {sec.get('train', 0):.1f} / {sec.get('evaluate', 0):.1f}",
                         f"{ph.get('sample', 0):.1f} / {ph.get('train', 0):.1f} / {ph.get('evaluate', 0):.1f}",
                         f"{r['worker_cpu_s'] - r.get('train_eval_worker_cpu_s', 0.0):.1f}", f"{r.get('train_eval_worker_cpu_s', 0.0):.1f}"])
    tok_table = md_table(["input", "documents read", "sample docs", "sampling tasks", "passes", "wall s: sample / train / evaluate",
                          "driver CPU s: sample / train / evaluate", "worker CPU s (sampling)", "worker CPU s (training, evaluation)"], tok_rows)
    shard_rows = [[f"{k}x", r["docs"], r["tokens"], f"{r['output_mb']:.0f}", _fmt(r["spill_peak_mb"], ".0f"),
                   f"{r['tokens'] / r['worker_cpu_s'] / 1e3:.0f}" if r["worker_cpu_s"] > 0 else "n/a"]
                  for k, r in sorted(runs["shard"].items())]
    shard_table = md_table(["input", "documents", "tokens", "shards MB", "token streams peak MB (scratch)", "k tokens per worker CPU s"], shard_rows)
    pipeline_rows = []
    for k, p in sorted((runs.get("pipeline") or {}).items()):
        per_stage = [f"{c['driver_s']:.2f} / {c['tasks_s']:.1f} ({c['driver_share'] * 100:.2f}%)" for c in (p["stages"][st] for st in STAGES)]
        pipeline_rows.append([f"{k}x", f"{p['wall_s']:.1f}", f"{p['cpu_s']:.1f}", f"{p['driver_cpu_share'] * 100:.2f}% ({p['driver_cpu_s']:.1f} s)",
                              f"{p['start_up_s']:.2f}", *per_stage, f"{p['driver_peak_rss_mb']:.0f}", f"{p['workers_peak_rss_mb']:.0f}"])
    pipeline_section = "" if not pipeline_rows else (
        "## One pipeline run (`--pipeline`)\n\n"
        "The same input as one `stage=pipeline` CLI run (filter, tokenizer and shard in one process, so one start-up), measured "
        "from outside as above; per stage, from the run's stats.json (`driver_cpu`): the driver's CPU while the stage ran and the "
        "CPU of the stage's executor tasks, each measured in the process that ran it (time.process_time; a worker's start-up and "
        "idle time are not a task's). Start-up: the driver's CPU before the first stage (imports, Hydra composing the config, "
        "checking the inputs).\n\n"
        + md_table(["input", "wall s", "total CPU s", "driver CPU share (whole run)", "driver start-up CPU s",
                    *[f"{st}: driver s / tasks s (driver share)" for st in STAGES], "driver peak RSS MB", "worker peak RSS MB"], pipeline_rows)
        + "\n\n")
    goal_rows = goals(runs, meta)
    ex = extrapolate(runs, meta)
    counts = [str(n) for n in ex["workers"]]
    ex_rows = []
    for stage in STAGES:
        e = ex["stages"][stage]
        m = e.get("marginal") or {}
        ex_rows.append([stage, f"{e['serial_fraction'] * 100:.1f}%", f"{e['cpu_s_per_mb']:.3f}", f"{e['fixed_serial_cpu_s']:.1f}",
                        _fmt(m.get("serial_fraction", None) and m["serial_fraction"] * 100, ".1f") + "%" if m else "n/a",
                        _fmt(m.get("cpu_s_per_mb"), ".3f"), *[_hms(e["wall_s"][n]) for n in counts]])
    ex_rows.append(["pipeline", "", "", "", "", "", *[_hms(ex["pipeline_wall_s"][n]) for n in counts]])
    ex_table = md_table(["stage", "serial fraction s", "CPU s per MB", "fixed serial CPU s", "marginal driver share (fit)",
                         "marginal CPU s per MB (fit)", *[f"T({n})" for n in counts]], ex_rows)
    filt = runs["filter"]
    base = scales[0]
    reasons = sorted({reason for r in filt.values() for reason in r["dropped"]})
    linear_rows = []
    for k in sorted(filt):
        f = k / base
        kept_ratio = filt[k]["kept"] / (f * filt[base]["kept"]) if filt[base]["kept"] else None
        linear_rows.append([f"{k}x", filt[k]["kept"], _fmt(kept_ratio, ".4f"),
                            *[f"{filt[k]['dropped'].get(x, 0)} ({f * filt[base]['dropped'].get(x, 0):.0f})" for x in reasons]])
    linear = md_table(["input", "kept", f"kept / (S/{base} x kept at {base}x)", *[f"{x} (expected)" for x in reasons]], linear_rows)
    made = sorted(inputs.generated)
    gen = (f"generated {len(made)} cop{'y' if len(made) == 1 else 'ies'} in {inputs.generated_s:.0f} s" if made
           else "all copies reused from the cache") + f" (`{inputs.root}`)"
    sets = f" {' '.join('--set ' + s for s in args.set)}" if args.set else ""
    command = (f"uv run python -m benchmarks.scale --scales {','.join(map(str, scales))} --workers {args.workers}"
               + (f" --max-docs {args.max_docs}" if args.max_docs is not None else "") + (" --compress" if args.compress else "")
               + (f" --rev {args.rev}" if args.rev else "") + (" --pipeline" if getattr(args, "pipeline", False) or runs.get("pipeline") else "") + sets
               + (f" --stages {args.stages} --rows-from {args.rows_from}" if getattr(args, "rows_from", None) else ""))
    wall_total = {k: sum(runs[st][k]["wall_s"] for st in STAGES if k in runs[st]) for k in scales}
    text = (
        "# The whole pipeline at scale: filter, tokenizer, shard (benchmarks/scale.py)\n\n"
        f"Machine: {machine()}, shared with other jobs (1-minute load {load[0]:.1f} at the start, {load[1]:.1f} at the end). "
        f"git {revision}.\nCommand: `{command}`. Default recipe (filter default, tokenizer bpe 32k, shard default), "
        f"`executor.workers={args.workers}`, {'gzip' if args.compress else 'uncompressed'} JSON lines, one file per copy; {gen}. "
        "Each stage is its own CLI run: `stage=filter`, then `stage=tokenizer tokenizer.input_run=<filter run>`, then "
        "`stage=shard shard.input_run=<filter run> shard.tokenizer=<tokenizer run>`.\n"
        "Input: S perturbed copies of the English dev text (words shuffled within each sentence; "
        f"{', '.join(SOURCES)}{'; the first %d records of each' % args.max_docs if args.max_docs is not None else ''}). "
        "How each figure is measured: the module docstring.\n\n"
        f"{table}\n\n"
        "Driver CPU share = the driver process's own CPU / all CPU of the stage's run (driver + reaped workers, os.wait4); "
        "for the tokenizer also the share of sampling alone (driver CPU while sampling, from the stage's stats.json, over that "
        "plus the workers' CPU but that of the training and evaluation tasks, which stats.json records). Docs/s per worker = "
        "documents the stage read / worker CPU seconds (worker start-up included; the tokenizer's: its sampling's). "
        "Scratch: the filter's dedup spill (`filtered/.work`) and the shard stage's token streams (`shards/<component>/.work`), "
        "peak apparent size sampled every "
        f"{args.interval} s. Output: `filtered/` (parts), `tokenizer/`, `shards/` at the end.\n\n"
        "Wall per scale, all three stages: " + ", ".join(f"{k}x {wall_total[k]:.0f} s" for k in scales)
        + ". Wall time depends on what else the shared box runs; CPU seconds and RSS hardly do.\n\n"
        "## Goals (issue 25, point 3) at the largest scale\n\n" + md_table(["stage", "measure", "value", "target", "met"], goal_rows) + "\n\n"
        + pipeline_section +
        "## The tokenizer's phases\n\n" + tok_table + "\n\n"
        "Every phase runs as executor tasks: sampling in groups of consecutive filtered parts (about 16 MB each), training as "
        "one task (SentencePiece's own threads) on a sample whose size is fixed by the recipe (`tokenizer.samples_per_component`), "
        "not by the input, evaluation as one task per component; the driver plans and adds up counts. With `executor.workers=1` "
        "the tasks run in the driver's process.\n\n"
        "## The shard stage\n\n" + shard_table + "\n\n"
        "## Are the copies distinct and as screenable as the original?\n\n" + linear + "\n\n"
        "Expected = the smallest scale's count times the scale ratio; exact or near duplicates across copies would show above it.\n\n"
        f"## Extrapolation to {TARGET_BYTES / 1e9:.0f} GB of text (an extrapolation, not a measurement)\n\n"
        f"Per stage: T(N) = fixed + C (s + (1 - s) / N), C = CPU per MB x {TARGET_BYTES / 1e6:.0f} MB. With two scales or more, "
        "c and s are the marginal ones (least-squares slopes of all CPU and of driver CPU over text bytes) and `fixed` the fit's "
        "intercept (start-up), counted as serial; with one scale, c and s are that scale's. The tokenizer's s is of its sampling; "
        "its driver CPU outside sampling at the largest scale (start-up, training, evaluation) is added to `fixed`. "
        "T(N) columns use the marginal figures where there are some.\n\n"
        f"{ex_table}\n\n"
        "These assume the serial fraction and the cost per byte stay as measured, and ignore I/O bandwidth, the network, "
        "scheduling, stragglers and start-up of many workers. The shard stage's serial part (the driver planning shards from "
        "the partitions' counts and handing out tasks) grows with the partitions; the tokenizer's training does not.\n"
    )
    headline = {
        "command": command, "git": revision, "workers": args.workers, "compress": args.compress, "max_docs": args.max_docs,
        "overrides": args.set, "rev": args.rev, "load_start": load[0], "load_end": load[1], "cache": str(inputs.root),
        "generated_copies": inputs.generated, "generation_s": round(inputs.generated_s, 1),
        "scales": {f"{k}x": meta[k] for k in scales},
        "runs": {stage: {f"{k}x": r for k, r in sorted(runs[stage].items())} for stage in (*STAGES, "pipeline") if stage in runs},
        "goals": [dict(zip(["stage", "measure", "value", "target", "met"], row)) for row in goal_rows],
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


def rewrite_report(args: argparse.Namespace) -> None:
    """The report again from the scale.json of finished (or stopped) benchmarks, without running anything:
    after a change of the report, or to merge scales measured by separate invocations (said in the report)."""
    meta: Dict[int, Dict[str, Any]] = {}
    runs: Dict[str, Dict[int, Dict[str, Any]]] = {stage: {} for stage in STAGES}
    saved_all = [json.loads(path.read_text()) for path in args.from_json]
    for saved in saved_all:
        done = {int(k[:-1]) for k in saved["scales"] if all(k in saved["runs"][stage] for stage in STAGES)}  # (scales whose stages all ran)
        meta.update({int(k[:-1]): v for k, v in saved["scales"].items() if int(k[:-1]) in done})
        for stage in STAGES:
            runs[stage].update({int(k[:-1]): r for k, r in saved["runs"][stage].items() if int(k[:-1]) in done})
        if "pipeline" in saved["runs"]:
            runs.setdefault("pipeline", {}).update({int(k[:-1]): r for k, r in saved["runs"]["pipeline"].items() if int(k[:-1]) in done})
    saved = saved_all[-1]
    for key in ("workers", "compress", "max_docs", "rev"):
        setattr(args, key, saved[key])
    kept = re.search(r" --stages (\S+) --rows-from (\S+)", saved["command"])  # (an invocation that measured some stages only)
    if kept:
        args.stages, args.rows_from = kept.group(1), Path(kept.group(2))
    args.set = saved["overrides"]
    inputs = Inputs.__new__(Inputs)
    inputs.root, inputs.generated, inputs.generated_s = saved["cache"], saved["generated_copies"], saved["generation_s"]
    loads = (min(x["load_start"] for x in saved_all), max(x["load_end"] for x in saved_all))
    revision = " + ".join(dict.fromkeys(x["git"] for x in saved_all))
    if len(saved_all) > 1:
        revision += f" (scales merged from {len(saved_all)} invocations: " + "; ".join(
            ", ".join(k for k in x["scales"]) for x in saved_all) + ")"
    text, headline = report(args, runs, meta, inputs, loads, revision)
    print(text)
    write_results("scale", text, headline)


def driver_ab(args: argparse.Namespace) -> None:
    """`--driver-ab REV`: the driver CPU of the stages in `--stages` (filter, tokenizer, shard), the code of
    REV against the working tree's, interleaved: per scale one filter run (working tree) as the later
    stages' input, then `--repeat` rounds, each running the stages with both codes (REV first in odd
    rounds, the working tree first in even ones), each run measured like the main benchmark's (`measure`).
    The filter's artifacts must be byte-identical between the two codes (stats.json's sha256)."""
    scales = sorted({int(s) for s in args.scales.split(",") if s.strip()})
    stages = [st for st in STAGES if st in {x.strip() for x in args.stages.split(",")}]
    inputs = Inputs(args.cache, args.max_docs, args.compress)
    work = Path(tempfile.mkdtemp(prefix="stage2-driver-ab-", dir=args.work))
    say = lambda msg: print(f"[driver-ab] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    load_start = os.getloadavg()[0]
    old, sha = export_revision(args.driver_ab, work / "code")
    codes = {f"{sha} (--driver-ab)": old, f"{git_state()} (working tree)": None}
    rows: List[List[str]] = []
    try:
        for k in scales:
            folder, _ = inputs.scale(k)
            pattern = f"{folder}/*{inputs.ext}"
            later = [st for st in stages if st != "filter"]
            filt = run_filter(pattern, work, f"x{k}-filter", args.workers, args.set, "filtered/.work", args.interval) if later else None
            got: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
            artifacts: Dict[str, Any] = {}
            for rep in range(args.repeat):
                order = list(codes.items()) if rep % 2 == 0 else list(codes.items())[::-1]
                for label, code in order:
                    name = f"x{k}-r{rep}-{'old' if code else 'new'}"
                    done: List[str] = []
                    if "filter" in stages:
                        fr = run_filter(pattern, work, f"{name}-filter", args.workers, args.set, "filtered/.work", args.interval, code)
                        got.setdefault(("filter", label), []).append(fr)
                        artifacts.setdefault(label, json.loads((Path(fr["run_dir"]) / "stats.json").read_text())["artifact_sha256"])
                        done.append(f"filter driver {fr['driver_cpu_s']:.2f} CPU s of {fr['cpu_s']:.1f}")
                        shutil.rmtree(fr["run_dir"], ignore_errors=True)
                    if later:
                        tok = run_tokenizer(pattern, Path(filt["run_dir"]), work, f"{name}-tokenizer", args.workers, args.set, args.interval, code)
                        got.setdefault(("tokenizer", label), []).append(tok)
                        done.append(f"tokenizer driver {tok['driver_cpu_s']:.2f} of {tok['cpu_s']:.1f}")
                    if "shard" in stages:
                        sh = run_shard(pattern, Path(filt["run_dir"]), Path(tok["run_dir"]), folder.name, work, f"{name}-shard",
                                       args.workers, args.set, args.interval, code)
                        got.setdefault(("shard", label), []).append(sh)
                        done.append(f"shard driver {sh['driver_cpu_s']:.2f} of {sh['cpu_s']:.1f}")
                        shutil.rmtree(sh["run_dir"], ignore_errors=True)
                    if later:
                        shutil.rmtree(tok["run_dir"], ignore_errors=True)
                    say(f"{k}x round {rep + 1} {label}: " + ", ".join(done))
            if len(artifacts) == 2 and len(set(map(json.dumps, artifacts.values()))) != 1:
                raise SystemExit(f"{k}x: the filter's artifacts differ between the two codes")
            for stage in [st for st in STAGES if any(key[0] == st for key in got)]:
                for label in codes:
                    rs = got[(stage, label)]
                    drv = sorted(r["driver_cpu_s"] for r in rs)
                    cpu = sorted(r["cpu_s"] for r in rs)
                    rows.append([stage, f"{k}x", label, " ".join(f"{d:.2f}" for d in (r["driver_cpu_s"] for r in rs)),
                                 f"{drv[len(drv) // 2]:.2f}", f"{cpu[len(cpu) // 2]:.1f}", f"{100 * drv[len(drv) // 2] / cpu[len(cpu) // 2]:.1f}%"])
            if filt:
                shutil.rmtree(filt["run_dir"], ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {machine()}; 1-minute load {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.")
    print(f"Command: `uv run python -m benchmarks.scale --driver-ab {args.driver_ab} --scales {args.scales} --stages {args.stages}"
          f" --repeat {args.repeat} --workers {args.workers}`\n")
    if "filter" in stages:
        print("The filter's artifacts (stats.json's sha256 of each) are byte-identical between the two codes.\n")
    print(md_table(["stage", "input", "code", "driver CPU s, each round", "median driver CPU s", "median total CPU s", "driver share (medians)"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10,40,150", help="comma-separated copy counts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the run folders (their path is printed)")
    parser.add_argument("--compress", action="store_true", help="write the copies as .jsonl.gz")
    parser.add_argument("--max-docs", type=int, default=None, help="the first N records of each source (smoke tests)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("STAGE2_SCALE_CACHE") or Path(tempfile.gettempdir()) / "stage2-scale-inputs"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every stage2 run (repeatable)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between /proc samples")
    parser.add_argument("--pipeline", action="store_true", help="also run the three stages as one `stage=pipeline` run per scale")
    parser.add_argument("--rev", default=None, help="run the stage2 code of this git revision (exported to a temp folder) instead of the working tree")
    parser.add_argument("--work", type=Path, default=None, help="where the run folders go (default: a new temp folder)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="the stages to measure (the filter always runs: the others read its run); the rest keep their rows from --rows-from")
    parser.add_argument("--rows-from", type=Path, default=None, help="a scale.json this benchmark wrote: rows of the stages not measured")
    parser.add_argument("--from-json", type=Path, action="append", default=[],
                        help="rewrite the report from scale.json files this benchmark wrote (no runs; repeatable: their scales are merged)")
    parser.add_argument("--driver-ab", default=None, metavar="REV",
                        help="only the driver CPU of --stages (filter, tokenizer, shard), REV's code against the working tree's, interleaved")
    parser.add_argument("--repeat", type=int, default=5, help="--driver-ab: rounds per scale")
    args = parser.parse_args()
    if args.driver_ab:
        driver_ab(args)
        return
    if args.from_json:
        rewrite_report(args)
        return
    scales = sorted({int(s) for s in args.scales.split(",") if s.strip()})
    if not scales or scales[0] < 1:
        raise SystemExit("--scales: positive integers, e.g. 1,10,40")
    if not BIN.exists():
        raise SystemExit(f"{BIN} not found: run through `uv run` in the checkout")

    measured = [st for st in STAGES if st in {x.strip() for x in args.stages.split(",")}]
    if "shard" in measured and "tokenizer" not in measured:
        raise SystemExit("--stages: the shard stage reads the tokenizer's run: measure both")
    kept_rows: Dict[str, Any] = {}
    if measured != list(STAGES):
        if args.rows_from is None:
            raise SystemExit("--stages without every stage needs --rows-from <scale.json> for the others' rows")
        kept_rows = json.loads(args.rows_from.read_text())
    inputs = Inputs(args.cache, args.max_docs, args.compress)
    work = Path(tempfile.mkdtemp(prefix="stage2-scale-", dir=args.work))
    revision, code = git_state(), None
    if kept_rows:
        revision += f"; {', '.join(st for st in STAGES if st not in measured)} rows kept from {args.rows_from.name} (git {kept_rows['git']})"
    load_start = os.getloadavg()[0]
    runs: Dict[str, Dict[int, Dict[str, Any]]] = {stage: {} for stage in STAGES}
    meta: Dict[int, Dict[str, Any]] = {}
    say = lambda msg: print(f"[scale] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.rev:
            code, sha = export_revision(args.rev, work / "code")
            revision = f"{sha} (--rev {args.rev}: stage2/ and conf/ exported with git archive, not the working tree)"
        for k in scales:
            before = inputs.generated_s
            folder, meta[k] = inputs.scale(k)
            made = meta[k]["generation_s"] = round(inputs.generated_s - before, 1)
            say(f"{k}x: {meta[k]['docs']} docs, {meta[k]['text_bytes'] / 1e6:.1f} MB of text"
                + (f" ({made:.0f} s to generate new copies)" if made else " (inputs cached)") + " ...")
            pattern = f"{folder}/*{inputs.ext}"
            filt = runs["filter"][k] = run_filter(pattern, work, f"x{k}-filter", args.workers, args.set, "filtered/.work", args.interval, code)
            if "tokenizer" in measured:
                tok = runs["tokenizer"][k] = run_tokenizer(pattern, Path(filt["run_dir"]), work, f"x{k}-tokenizer", args.workers, args.set, args.interval, code)
            if "shard" in measured:
                runs["shard"][k] = run_shard(pattern, Path(filt["run_dir"]), Path(tok["run_dir"]), folder.name, work, f"x{k}-shard",
                                             args.workers, args.set, args.interval, code)
            if args.pipeline:
                runs.setdefault("pipeline", {})[k] = run_pipeline(pattern, work, f"x{k}-pipeline", args.workers, args.set, args.interval, code)
            for stage in STAGES:
                if stage not in measured:  # (the filter ran as the others' input; its row is the kept one)
                    runs[stage][k] = kept_rows["runs"][stage][f"{k}x"]
            for stage, r in ((st, runs[st][k]) for st in measured):
                say(f"{k}x {stage}: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU s, driver {r['driver_cpu_share'] * 100:.1f}%, "
                    f"max RSS {r['max_rss_mb']:.0f} MB")
            if args.pipeline:
                p = runs["pipeline"][k]
                say(f"{k}x pipeline: {p['wall_s']:.0f} s wall, {p['cpu_s']:.0f} CPU s, driver {p['driver_cpu_share'] * 100:.1f}%, "
                    + ", ".join(f"{st} {c['driver_share'] * 100:.2f}%" for st, c in p["stages"].items()))
            if not args.keep:
                for r in (filt, *(runs[st][k] for st in measured if st != "filter"), *([runs["pipeline"][k]] if args.pipeline else [])):
                    shutil.rmtree(r["run_dir"], ignore_errors=True)
            # Partial results after every scale: a long run that is stopped still leaves what it measured.
            text, headline = report(args, runs, {s: meta[s] for s in meta}, inputs, (load_start, os.getloadavg()[0]), revision)
            write_results("scale", text, headline)
    finally:
        if args.keep:
            say(f"run folders kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if not args.keep:  # deleted: do not point at them from the results
        for stage in runs:
            for r in runs[stage].values():
                r.pop("run_dir", None)
    text, headline = report(args, runs, meta, inputs, (load_start, os.getloadavg()[0]), revision)
    print(text)
    write_results("scale", text, headline)


if __name__ == "__main__":
    main()
