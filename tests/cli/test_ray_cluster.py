"""Ray across nodes, for real (issue 14, point 6).

A 3-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head node and two more, one CPU
each) runs the filter through the real CLI, `stage2 stage=filter executor=ray executor.address=<cluster>`,
and every filter artifact must be byte-identical to `executor=local executor.workers=2` on the same
recipe. A second test kills that Ray run with -9 mid-stage and resumes it on the same cluster.

The pytest process never calls `ray.init`: it only starts the cluster's processes (GCS, raylets, their
workers); each CLI subprocess joins as a driver through the address. The cluster lives in a private
temp dir (RAY_TMPDIR), so a `ray.init()` without address elsewhere on the machine (another test session,
`executor=ray` with `address: null`) does not find and join it. The fixture's finalizer shuts the
cluster down and fails the run if any of its processes outlive the shutdown.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

from helpers import BIN, artifact_hashes, assert_killed_mid_stage, assert_resumed_like, kill_when, resume, sample_records, stage2, stats, write_jsonl

pytestmark = pytest.mark.slow

NODES = 3  # the head and two more, one CPU each
PARTITION = 50
# A few hundred documents per component, so that at PARTITION documents a partition the stage has
# ~25 tasks. Chosen to exercise every decision that crosses partitions: exact duplicates (web repeats
# some of its own documents further on), near duplicates (the sample's neardup file), language drops
# (tldr pages in 18 languages) and the length screen.
COMPONENTS: Dict[str, List[Tuple[str, int]]] = {
    "web": [("web_stackexchange.jsonl.gz", 250), ("web_cc.jsonl.gz", 69)],
    "encyclopedia": [("foldoc.jsonl.gz", 250)],
    "tldr": [("noisy_tldr.jsonl.gz", 200)],
    "neardup": [("noisy_neardup.jsonl.gz", 300)],
}
WEB_REPEATS = 30  # the first 30 web documents again, under new ids, at the end of the component
RECIPE = [
    "stage=filter",
    "dataset=files",
    f"dataset.paths=[{','.join(f'in/{name}.jsonl' for name in COMPONENTS)}]",
    f"dataset.partition_size={PARTITION}",
    "progress=false",
]
STAT_KEYS = ("records_in", "kept", "dropped")


# --- the cluster --------------------------------------------------------------------------------


def _proc_start(pid: int) -> Optional[Tuple[str, int, str]]:
    """(state, ppid, start time) of a live process, None when it is gone (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return None if fields[0] in ("Z", "X") else (fields[0], int(fields[1]), fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _cluster_processes(temp_dir: str, before: Optional[Dict[int, str]] = None) -> Dict[int, str]:
    """pid -> start time of every live process of the cluster: descendants of this process (the nodes'
    GCS, raylets, agents, and the raylets' workers) but those in `before` (children of this process
    from before the cluster: multiprocessing's resource tracker, say), and any process naming the
    cluster's temp dir."""
    children: Dict[int, List[int]] = {}
    found: Dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        info = _proc_start(int(entry.name))
        if info is None:
            continue
        children.setdefault(info[1], []).append(int(entry.name))
        if temp_dir in _cmdline(int(entry.name)):
            found[int(entry.name)] = info[2]
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        info = _proc_start(pid)
        if info is not None:
            if (before or {}).get(pid) != info[2]:
                found[pid] = info[2]
            todo.extend(children.get(pid, []))
    return found


def _still_alive(procs: Dict[int, str]) -> Dict[int, str]:
    alive = {}
    for pid, start in procs.items():
        info = _proc_start(pid)
        if info is not None and info[2] == start:  # the same process, not a reused pid
            alive[pid] = _cmdline(pid)
    return alive


@pytest.fixture(scope="module")
def ray_cluster():
    """A started 3-node cluster (the `Cluster` object; `.address` is the GCS address to join)."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # A short path: Ray's unix sockets live below it (107-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="s2ray-", dir="/tmp")
    before = _cluster_processes(temp_dir)
    saved_env = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir
    cluster = None
    try:
        # No dashboard: nothing here uses it, it costs start-up time, and its module processes
        # outlive the cluster's shutdown by seconds.
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        for _ in range(NODES - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cluster.temp_dir = temp_dir  # for the tests: where the session's logs are
        yield cluster
    finally:
        procs = _cluster_processes(temp_dir, before)
        if cluster is not None:
            cluster.shutdown()
        deadline = time.monotonic() + 20
        while _still_alive(procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _still_alive(procs)
        for pid in left:  # ours, started by this fixture: do not leave them behind
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if saved_env is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved_env
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes still running 20 s after the cluster's shutdown: {left}"


def ray_task_nodes(temp_dir: str) -> Dict[str, Set[str]]:
    """Ray job id -> ids of the nodes whose workers ran a stage2 task for it, as Ray's own session logs
    show it (each worker's `worker-<worker>-<job>-<pid>.out` marks every task with `:job_id:` and
    `:task_name:` lines; its `python-core-worker-<worker>_<pid>.log` names its node). Empty when the
    logs are not in this form (another Ray version): the caller then draws no conclusion."""
    out: Dict[str, Set[str]] = {}
    for logs in Path(temp_dir).glob("ray/session_*/logs"):
        if logs.parent.is_symlink():
            continue  # session_latest
        for worker_out in logs.glob("worker-*.out"):
            m = re.fullmatch(r"worker-([0-9a-f]+)-[0-9a-f]+-(\d+)\.out", worker_out.name)
            core_log = logs / f"python-core-worker-{m.group(1)}_{m.group(2)}.log" if m else None
            if core_log is None or not core_log.is_file():
                continue
            node = re.search(r"node_id=([0-9a-f]+)", core_log.read_text(errors="replace"))
            if node is None:
                continue
            job = None
            for line in worker_out.read_text(errors="replace").splitlines():
                if line.startswith(":job_id:"):
                    job = line[len(":job_id:") :]
                elif line.startswith(":task_name:") and job is not None:
                    out.setdefault(job, set()).add(node.group(1))
    return out


# --- inputs and the local reference ---------------------------------------------------------------


@pytest.fixture(scope="module")
def filter_inputs(tmp_path_factory):
    """The input files and the recipe's reference run, `executor=local executor.workers=2`."""
    base = tmp_path_factory.mktemp("ray_cluster")
    for name, files in COMPONENTS.items():
        records = [r for sample, n in files for r in sample_records(sample, n)]
        if name == "web":
            records += [dict(r, id=f"{r['id']}-again") for r in records[:WEB_REPEATS]]
        write_jsonl(base / "in" / f"{name}.jsonl", records)
    recipe = [*RECIPE, f"runs_index={base}/runs.jsonl"]
    stage2([*recipe, "executor=local", "executor.workers=2", "hydra.run.dir=local"], base)
    local = stats(base / "local")["stages"]["filter"]
    # Many tasks, and the cross-partition decisions really taken, or identical bytes prove little.
    assert sum(c["partitions"] for c in local["components"].values()) >= 20
    for reason in ("too_short", "duplicate", "near_duplicate", "language"):
        assert local["dropped"][reason] > 0, reason
    return base, recipe


def filter_artifacts(run_dir: Path) -> Dict[str, str]:
    """sha256 of every artifact of the filter (its parts and manifest) that stats.json lists."""
    hashes = {rel: h for rel, h in artifact_hashes(run_dir).items() if rel.startswith("filtered/")}
    assert "filtered/manifest.json" in hashes and any(rel.endswith(".parquet") for rel in hashes), sorted(hashes)
    return hashes


def assert_same_counts(run_dir: Path, reference: Path) -> None:
    got, want = stats(run_dir)["stages"]["filter"], stats(reference)["stages"]["filter"]
    for key in STAT_KEYS:
        assert got[key] == want[key], key
    assert sorted(got["components"]) == sorted(want["components"])
    for name, entry in want["components"].items():
        for key in STAT_KEYS:
            assert got["components"][name][key] == entry[key], (name, key)


def assert_ran_on_several_nodes(run_dir: Path, stages: Tuple[str, ...] = ("filter",)) -> None:
    # THE SPREAD ASSERTION: the Ray executor records how many distinct Ray nodes ran each stage's tasks
    # (`stages.<stage>.executor_nodes`); the test below also asks Ray's own logs (ray_task_nodes).
    for stage in stages:
        nodes = stats(run_dir)["stages"][stage].get("executor_nodes")
        assert isinstance(nodes, int) and nodes >= 2, (stage, nodes)


# --- the tests ------------------------------------------------------------------------------------


def test_ray_cluster_of_three_nodes_writes_the_same_bytes_as_local(filter_inputs, ray_cluster):
    base, recipe = filter_inputs
    jobs_before = set(ray_task_nodes(ray_cluster.temp_dir))
    stage2([*recipe, "executor=ray", f"executor.address={ray_cluster.address}", "hydra.run.dir=ray"], base)
    run = stats(base / "ray")
    assert run["status"] == "finished"
    assert filter_artifacts(base / "ray") == filter_artifacts(base / "local")
    assert_same_counts(base / "ray", base / "local")
    assert_ran_on_several_nodes(base / "ray")
    # What Ray's session logs say about the same run, independently of stage2's own record: its tasks
    # ran on at least two of the three nodes. (No conclusion when the logs are not in the known form.)
    seen = {job: nodes for job, nodes in ray_task_nodes(ray_cluster.temp_dir).items() if job not in jobs_before}
    if seen:
        nodes = set().union(*seen.values())
        assert len(nodes) >= 2, f"every task ran on one node: {seen}"


def parts_written(run_dir: Path) -> Optional[List[str]]:
    """The filter's parquet parts on disk (`filtered/<component>/part-<n>.parquet`, not a temp file),
    once there are at least two and the stage has not finished (no manifest yet); None before."""
    filtered = run_dir / "filtered"
    try:
        if (filtered / "manifest.json").exists():
            return None
        parts = sorted(str(p.relative_to(filtered)) for p in filtered.glob("*/part-*.parquet"))
    except OSError:  # a folder renamed or removed while we looked
        return None
    return parts if len(parts) >= 2 else None


def test_ray_run_killed_mid_stage_resumes_to_the_local_bytes(filter_inputs, ray_cluster):
    base, recipe = filter_inputs
    run_dir = base / "ray_killed"
    ray_recipe = [*recipe, "executor=ray", f"executor.address={ray_cluster.address}"]
    kill_when(ray_recipe, base, run_dir, parts_written, timeout=120)
    assert_killed_mid_stage(run_dir, run_dir / "filtered" / "manifest.json")

    resume(run_dir, base)  # the saved recipe: executor=ray on the same cluster
    assert_resumed_like(run_dir, base / "local")  # every listed artifact, and no temp file or .work left
    assert filter_artifacts(run_dir) == filter_artifacts(base / "local")
    assert_same_counts(run_dir, base / "local")
    filt = stats(run_dir)["stages"]["filter"]
    assert filt["resumed"] is True
    # Finished work was kept, not redone (the count is `partitions_resumed` before issue 14's rewrite of
    # the filter, `tasks_resumed` after it).
    assert max(filt.get("tasks_resumed", 0), filt.get("partitions_resumed", 0)) >= 1, filt
    assert "resume:" in (run_dir / "stage2.log").read_text()


# --- the whole pipeline ---------------------------------------------------------------------------

PIPELINE = [
    *[r for r in RECIPE if not r.startswith("stage=")],
    "stage=pipeline",
    "tokenizer.vocab_size=600",
    "tokenizer.samples_per_component=120",  # fewer than most components keep: the sampling bounds matter
    "tokenizer.eval_docs_per_component=10",
    "shard.sequences_per_shard=32",
]


def test_ray_cluster_runs_the_whole_pipeline_to_the_local_bytes(filter_inputs, ray_cluster):
    # filter, tokenizer (sampling, training, evaluation as tasks) and shard, all on the cluster: every artifact of
    # every stage the same bytes as a local run with two workers.
    base, _ = filter_inputs
    recipe = [*PIPELINE, f"runs_index={base}/runs.jsonl"]
    stage2([*recipe, "executor=local", "executor.workers=2", "hydra.run.dir=pipeline_local"], base)
    stage2([*recipe, "executor=ray", f"executor.address={ray_cluster.address}", "hydra.run.dir=pipeline_ray"], base)
    local, ray = artifact_hashes(base / "pipeline_local"), artifact_hashes(base / "pipeline_ray")
    assert ray == local
    for prefix in ("filtered/", "tokenizer/", "shards/"):
        assert any(rel.startswith(prefix) for rel in local), (prefix, sorted(local))
    got, want = stats(base / "pipeline_ray"), stats(base / "pipeline_local")
    assert got["status"] == "finished"
    for stage in ("filter", "tokenizer", "shard"):
        assert stage in got["stages"], stage
    assert got["stages"]["tokenizer"]["sample"] == want["stages"]["tokenizer"]["sample"]
    assert got["stages"]["tokenizer"]["sample"]["docs"] < got["stages"]["filter"]["kept"]  # a sample, not everything
    resources = got["stages"]["tokenizer"]["resources"]
    assert resources["train_task"]["pid"] != resources["driver_pid"]  # trained in a Ray worker, not the driver
    assert_ran_on_several_nodes(base / "pipeline_ray", ("filter",))
    # The tokenizer's and shard's tasks here are a few of a hundredth of a second each: Ray may run them all
    # on one leased worker, so only that they ran as Ray tasks is certain (the count is recorded for those).
    for stage in ("tokenizer", "shard"):
        assert got["stages"][stage].get("executor_nodes", 0) >= 1, stage


# --- executor=ray without an address --------------------------------------------------------------


def test_ray_without_an_address_starts_its_own_instance_beside_a_running_cluster(filter_inputs, monkeypatch):
    # A cluster that `ray start --head` left running on this node (a user's): ray.init() without an address
    # would join it and then refuse the run's num_cpus. `executor=ray` starts an instance of its own, as
    # docs/executors.md says; `executor.address=auto` is how to join that cluster.
    base, recipe = filter_inputs
    temp_dir = tempfile.mkdtemp(prefix="s2rs-", dir="/tmp")  # (Ray's sockets: a short path)
    monkeypatch.setenv("RAY_TMPDIR", temp_dir)  # where ray.init() looks for a running cluster
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    before = _cluster_processes(temp_dir)
    try:
        subprocess.run([str(BIN / "ray"), "start", "--head", "--num-cpus", "1", "--port", "0", "--include-dashboard", "false",
                        "--disable-usage-stats"], check=True, capture_output=True, timeout=120)
        assert (Path(temp_dir) / "ray" / "ray_current_cluster").is_file()  # what ray.init() would find and join
        stage2([*recipe, "executor=ray", "executor.workers=2", "hydra.run.dir=ray_own_instance"], base)
    finally:
        procs = _cluster_processes(temp_dir, before)
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert filter_artifacts(base / "ray_own_instance") == filter_artifacts(base / "local")
    assert stats(base / "ray_own_instance")["stages"]["filter"]["executor_nodes"] == 1


def test_ray_without_an_address_joins_the_cluster_ray_address_names(filter_inputs, ray_cluster, monkeypatch):
    # `ray job submit` runs its entrypoint with RAY_ADDRESS set: the run joins that cluster.
    base, recipe = filter_inputs
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    stage2([*recipe, "executor=ray", "hydra.run.dir=ray_address"], base)
    assert filter_artifacts(base / "ray_address") == filter_artifacts(base / "local")
    assert_ran_on_several_nodes(base / "ray_address")
    assert f"joining the Ray cluster at {ray_cluster.address} (RAY_ADDRESS)" in (base / "ray_address" / "stage2.log").read_text()
