"""`stage2 stage=verify verify.dir=<run folder>`: check a run folder's artifacts against its indexes.

A finished run's stats.json lists the sha256 of every artifact (`artifact_sha256`): each is re-hashed
first, so a changed or deleted filtered part, tokenizer model or shard is named. Runs without it (older
runs) get the deeper checks only; a run that did not finish is refused.
Filtered parts: every part listed in filtered/manifest.json exists.
Shards: every file re-hashed against index.json, shape `[rows, seq_len]`, dtype, ids < vocab size,
and the token count invariant `tokens + separators == rows * seq_len - padding + tail_dropped`.
Filter stats (when the run has them): `records_in == kept + sum(dropped)` per component.
The first problem raises Stage2Error naming the file, so the command exits non-zero.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import yaml

from stage2.errors import Stage2Error
from stage2.parts import FILTERED_DIR
from stage2.parts import MANIFEST as PARTS_MANIFEST
from stage2.files import file_sha256, read_json
from stage2.shard import INDEX, MANIFEST, SHARDS_DIR

log = logging.getLogger(__name__)


def check_status(folder: Path, stats: Dict[str, Any]) -> None:
    # Older stats.json files may lack a status; only an explicit unfinished one is refused.
    status = stats.get("status", "finished")
    if status != "finished":
        raise Stage2Error(
            f"{folder}: the run did not finish (status {status}); resume it with `stage2-rerun {folder} resume=true`"
            " or verify another run"
        )


def check_artifact_hashes(folder: Path, stats: Dict[str, Any]) -> int:
    """Every artifact the finished run recorded, re-hashed; returns how many were checked."""
    recorded: Dict[str, str] = stats.get("artifact_sha256") or {}
    for rel, digest in sorted(recorded.items()):
        path = folder / rel
        if not path.is_file():
            raise Stage2Error(f"{path}: listed in {folder / 'stats.json'} but missing")
        sha = file_sha256(path)
        if sha != digest:
            raise Stage2Error(f"{path}: sha256 {sha[:16]}... does not match stats.json ({digest[:16]}...): the file changed")
    return len(recorded)


def check_filtered_parts(folder: Path) -> int:
    """Every part filtered/manifest.json lists exists; returns how many parts it lists."""
    manifest_path = folder / FILTERED_DIR / PARTS_MANIFEST
    if not manifest_path.exists():
        return 0
    n = 0
    for name, entry in read_json(manifest_path)["components"].items():
        for rel in entry.get("parts", []):
            if not (folder / rel).is_file():
                raise Stage2Error(f"{folder / rel}: listed in {manifest_path} (component {name}) but missing")
            n += 1
    return n


def check_component(comp_dir: Path) -> Dict[str, Any]:
    """One component's shards against its index.json; returns counts checked."""
    index_path = comp_dir / INDEX
    if not index_path.exists():
        raise Stage2Error(f"{index_path}: missing")
    index = read_json(index_path)
    seq_len, vocab = int(index["seq_len"]), int(index["vocab_size"])
    tok = index.get("tokenizer") or {}
    model = comp_dir.parent.parent / tok.get("path", "")  # relative paths are inside the run folder
    if tok.get("path") and model.is_file() and file_sha256(model) != tok.get("sha256"):
        raise Stage2Error(f"{model}: sha256 does not match the tokenizer recorded in {index_path}")
    rows = 0
    for entry in index["shards"]:
        path = comp_dir / entry["file"]
        if not path.exists():
            raise Stage2Error(f"{path}: listed in {index_path} but missing")
        sha = file_sha256(path)
        if sha != entry["sha256"]:
            raise Stage2Error(f"{path}: sha256 {sha[:16]}... does not match {index_path} ({entry['sha256'][:16]}...): the file changed")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # a truncated or rewritten header
            raise Stage2Error(f"{path}: not a readable .npy file: {exc}") from exc
        if arr.dtype.name != index["dtype"]:
            raise Stage2Error(f"{path}: dtype {arr.dtype.name}, index says {index['dtype']}")
        if arr.shape != (int(entry["rows"]), seq_len):
            raise Stage2Error(f"{path}: shape {arr.shape}, index says ({entry['rows']}, {seq_len})")
        if arr.size and int(arr.max()) >= vocab:
            raise Stage2Error(f"{path}: id {int(arr.max())} is out of range for a vocabulary of {vocab}")
        rows += arr.shape[0]
    if rows != index["rows"]:
        raise Stage2Error(f"{index_path}: shards hold {rows} rows, index says {index['rows']}")
    stream = index["tokens"] + index["separators"]
    packed = rows * seq_len - index["padding"] + index["tail_dropped"]
    if stream != packed:
        raise Stage2Error(
            f"{index_path}: tokens + separators = {stream} but rows * seq_len - padding + tail_dropped = {packed}"
        )
    per_doc = int(bool(index.get("add_eos"))) + int(bool(index.get("add_bos")))
    if index["separators"] != index["documents"] * per_doc:
        raise Stage2Error(f"{index_path}: {index['separators']} separators for {index['documents']} documents ({per_doc} each expected)")
    if index["padding"] and index["tail_dropped"]:
        raise Stage2Error(f"{index_path}: both padding and tail_dropped are set")
    if index["padding"] >= seq_len or index["tail_dropped"] >= seq_len:
        raise Stage2Error(f"{index_path}: padding/tail_dropped must be shorter than a row ({seq_len})")
    return {"shards": len(index["shards"]), "rows": rows, "tokens": stream}


def check_filter_stats(stats: Dict[str, Any], stats_path: Path) -> int:
    comps = ((stats.get("stages") or {}).get("filter") or {}).get("components") or {}
    for name, c in comps.items():
        dropped = sum((c.get("dropped") or {}).values())
        if c["records_in"] != c["kept"] + dropped:
            raise Stage2Error(
                f"{stats_path}: filter component {name}: records_in {c['records_in']} != kept {c['kept']} + dropped {dropped}"
            )
    return len(comps)


def check_filter_to_shard(folder: Path, stats: Dict[str, Any], shards: Path) -> None:
    """In a pipeline run the shards are made of this run's filtered parts: every kept document is sharded."""
    comps = ((stats.get("stages") or {}).get("filter") or {}).get("components") or {}
    cfg_path = folder / "config.resolved.yaml"
    if not comps or not cfg_path.exists():
        return
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    if (cfg.get("shard") or {}).get("input_run"):
        return  # sharded another run's parts
    for name, c in comps.items():
        index_path = shards / name / INDEX
        if index_path.exists():
            documents = read_json(index_path)["documents"]
            if documents != c["kept"]:
                raise Stage2Error(f"{index_path}: {documents} documents sharded but the filter kept {c['kept']} ({folder / 'stats.json'})")


def verify_folder(folder: Path) -> Dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise Stage2Error(f"verify.dir={folder}: no such folder")
    report: Dict[str, Any] = {"folder": str(folder), "components": {}, "filter_components": 0, "artifacts": 0, "parts": 0}
    stats_path = folder / "stats.json"
    if stats_path.exists():
        stats = read_json(stats_path)
        check_status(folder, stats)
        report["artifacts"] = check_artifact_hashes(folder, stats)
        report["filter_components"] = check_filter_stats(stats, stats_path)
    report["parts"] = check_filtered_parts(folder)
    shards = folder / SHARDS_DIR
    manifest_path = shards / MANIFEST
    if manifest_path.exists():
        names: List[str] = [c["name"] for c in read_json(manifest_path)["components"]]
    else:
        names = sorted(p.parent.name for p in shards.glob(f"*/{INDEX}"))
    for name in names:
        report["components"][name] = check_component(shards / name)
    if stats_path.exists() and names:
        check_filter_to_shard(folder, read_json(stats_path), shards)
    if not names and not report["filter_components"] and not report["artifacts"]:
        raise Stage2Error(f"{folder}: nothing to verify (no {SHARDS_DIR}/*/{INDEX}, no filter stats, no artifact_sha256 in stats.json)")
    return report


def run(cfg: Dict[str, Any], run_dir: Path) -> Dict[str, Any]:
    target = (cfg.get("verify") or {}).get("dir")
    if not target:
        raise Stage2Error("stage=verify needs verify.dir=<run folder>")
    folder = Path(target) if Path(target).is_absolute() else Path(cfg.get("launch_dir") or ".") / target
    report = verify_folder(folder)
    n_shards = sum(c["shards"] for c in report["components"].values())
    n_rows = sum(c["rows"] for c in report["components"].values())
    checked = [f"{report['artifacts']} artifacts match stats.json"]
    if report["parts"]:
        checked.append(f"{report['parts']} filtered parts")
    if report["components"]:  # (a filter or tokenizer run has no shards: say nothing of them)
        checked.append(f"shards of {len(report['components'])} components: {n_shards} shards, {n_rows} rows")
    if report["filter_components"]:
        checked.append(f"filter stats of {report['filter_components']} components")
    print(f"stage2: verify OK: {folder}: {'; '.join(checked)}")
    return report
