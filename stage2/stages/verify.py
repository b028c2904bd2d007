"""`stage2 stage=verify verify.dir=<run folder>`: check a run folder's artifacts against its records.

verify passes only on evidence: a missing or damaged record is a failure that names what is missing,
never a check skipped. A run folder must have
- `stats.json` with `status: finished`, the steps that ran, and `artifact_sha256` (the sha256 of every
  artifact, recorded when the run finished; the same files as its `artifacts` list): each is re-hashed,
  so a changed or deleted filtered part, tokenizer model or shard is named;
- `provenance.json` (readable, with the run's config digest and inputs) and `config.resolved.yaml`
  (whose config digest is the one stats.json and provenance.json record);
- the outputs of each step it ran: filter -> `filtered/manifest.json` (every part it lists exists and
  is among the hashed artifacts) and per-component counts with `records_in == kept + sum(dropped)`;
  tokenizer -> a `tokenizer/*.model`; shard -> `shards/manifest.json` and each component's index.json.
Shards, per component and split (train, validation): every file re-hashed against index.json, its .npy
header and length checked against the index (`stage2.shards.format.open_shard`, as the training reader
opens it), ids < vocab size, the tokenizer the index names present with its recorded sha256, and the token
count invariant `tokens + separators == rows * seq_len - padding + tail_dropped`. The document table: its
hash, one row per document, offsets that are the running token counts, and every separator (EOS, or BOS)
of the shards exactly where the table puts a document's end. Each trainer format file: its hash, token
files equal to the npy shards' stream token for token (the dropped tail checked by its separators),
Megatron's sequence lengths and datatrove's document ends equal to the table's.
The first problem raises Stage2Error naming the file, so the command exits non-zero.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from stage2.config import Config, config_digest
from stage2.errors import Stage2Error
from stage2.io.parts import FILTERED_DIR
from stage2.io.parts import MANIFEST as PARTS_MANIFEST
from stage2.io.files import file_sha256, read_json
import numpy as np

from stage2.shards.format import (
    INDEX, MANIFEST, SHARDS_DIR, SPLITS, datatrove_metadata, open_shard, read_documents, read_format_tokens, read_megatron_idx, split_dir,
)

log = logging.getLogger(__name__)


def check_status(folder: Path, stats: Dict[str, Any]) -> None:
    status = stats.get("status")
    if status is None:
        raise Stage2Error(f"{folder / 'stats.json'}: no status: the record is damaged; nothing can be verified without it")
    if status != "finished":
        why = f": {stats['error']}" if stats.get("error") else ""
        if not (folder / "provenance.json").is_file():  # it stopped at start-up: there is nothing to resume
            raise Stage2Error(f"{folder}: the run did not finish (status {status}{why}); it stopped before any work: run its recipe again")
        raise Stage2Error(
            f"{folder}: the run did not finish (status {status}{why}); resume it with `stage2-rerun {folder} resume=true`"
            " or verify another run"
        )


def check_artifact_hashes(folder: Path, stats: Dict[str, Any]) -> int:
    """Every artifact the finished run recorded, re-hashed; returns how many were checked."""
    stats_path = folder / "stats.json"
    recorded = stats.get("artifact_sha256")
    if not isinstance(recorded, dict) or not recorded:
        what = "no artifact_sha256" if recorded is None else "an empty artifact_sha256"
        raise Stage2Error(f"{stats_path}: {what} (the sha256 of the run's artifacts, recorded when it finished): nothing to check the artifacts against")
    listed = stats.get("artifacts")
    if not isinstance(listed, list) or set(listed) != set(recorded):
        unhashed = sorted(set(listed or []) - set(recorded))
        detail = f"{unhashed[0]} is listed in artifacts but has no sha256" if unhashed else "its artifacts and artifact_sha256 name different files"
        raise Stage2Error(f"{stats_path}: {detail}: the record is damaged")
    for rel, digest in sorted(recorded.items()):
        path = folder / rel
        if not path.is_file():
            raise Stage2Error(f"{path}: listed in {stats_path} but missing")
        sha = file_sha256(path)
        if sha != digest:
            raise Stage2Error(f"{path}: sha256 {sha[:16]}... does not match stats.json ({digest[:16]}...): the file changed")
    return len(recorded)


def check_records(folder: Path, stats: Dict[str, Any]) -> Dict[str, Any]:
    """provenance.json and config.resolved.yaml present, readable and of the recipe stats.json records;
    returns the resolved config."""
    digest = stats.get("config_digest")
    if not digest:
        raise Stage2Error(f"{folder / 'stats.json'}: no config_digest: the record is damaged")
    prov_path = folder / "provenance.json"
    if not prov_path.is_file():
        raise Stage2Error(f"{prov_path}: missing: the run's provenance (inputs, versions, lineage) is gone; the run cannot be verified without it")
    provenance = read_json(prov_path)  # a cut-short file fails here
    missing = [k for k in ("config_digest", "inputs") if not isinstance(provenance, dict) or k not in provenance]
    if missing:
        raise Stage2Error(f"{prov_path}: no {', '.join(missing)}: the record is damaged")
    if provenance["config_digest"] != digest:
        raise Stage2Error(f"{prov_path}: config digest {provenance['config_digest']}, stats.json says {digest}: the records are of different runs")
    cfg_path = folder / "config.resolved.yaml"
    if not cfg_path.is_file():
        raise Stage2Error(f"{cfg_path}: missing: the run's recipe is gone; the run cannot be verified without it")
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise Stage2Error(f"{cfg_path}: cannot be read ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}): the file is damaged") from None
    if not isinstance(cfg, dict) or config_digest(cfg) != digest:
        raise Stage2Error(f"{cfg_path}: its config digest is not the {digest} stats.json records: the recipe was changed")
    return cfg


def run_steps(stats: Dict[str, Any], stats_path: Path) -> List[str]:
    steps = stats.get("steps")
    if not isinstance(steps, list) or not steps or not set(steps) <= {"filter", "tokenizer", "shard"}:
        raise Stage2Error(f"{stats_path}: no steps (which of filter, tokenizer, shard ran): the record is damaged")
    return steps


def check_filtered_parts(folder: Path, recorded: Dict[str, str]) -> int:
    """Every part filtered/manifest.json lists exists and is a hashed artifact; returns how many parts it lists."""
    manifest_path = folder / FILTERED_DIR / PARTS_MANIFEST
    if not manifest_path.exists():
        raise Stage2Error(f"{manifest_path}: missing, but the run's filter step ran")
    n = 0
    for name, entry in read_json(manifest_path)["components"].items():
        for rel in entry.get("parts", []):
            if not (folder / rel).is_file():
                raise Stage2Error(f"{folder / rel}: listed in {manifest_path} (component {name}) but missing")
            if rel not in recorded:
                raise Stage2Error(f"{folder / rel}: listed in {manifest_path} (component {name}) but not in artifact_sha256 of {folder / 'stats.json'}")
            n += 1
    return n


def check_tokenizer_model(folder: Path, recorded: Dict[str, str]) -> None:
    if not any(rel.startswith("tokenizer/") and rel.endswith(".model") for rel in recorded):
        raise Stage2Error(f"{folder / 'tokenizer'}: no tokenizer model among the artifacts of {folder / 'stats.json'}, but the run's tokenizer step ran")


def check_component(comp_dir: Path) -> Dict[str, Any]:
    """One component's splits (train, validation) against their index.json; returns counts checked (train's)."""
    out = check_split(comp_dir, "train")
    val = check_split(comp_dir, "validation")
    out["validation_rows"] = val["rows"]
    out["documents"] += val["documents"]
    out["format_files"] += val["format_files"]
    return out


def check_split(comp_dir: Path, split: str) -> Dict[str, Any]:
    """One split's shards, document table and trainer formats against its index.json."""
    folder = split_dir(comp_dir, split)
    index_path = folder / INDEX
    if not index_path.exists():
        raise Stage2Error(f"{index_path}: missing")
    index = read_json(index_path)
    needed = ("seq_len", "vocab_size", "dtype", "tokenizer", "shards", "rows", "tokens", "separators", "documents", "padding", "tail_dropped", "documents_table", "formats")
    missing = [k for k in needed if not isinstance(index, dict) or k not in index]
    if missing:
        raise Stage2Error(f"{index_path}: no {', '.join(missing)}: the index is damaged (or made before stage2 wrote document tables)")
    seq_len, vocab = int(index["seq_len"]), int(index["vocab_size"])
    tok = index["tokenizer"] or {}
    if not tok.get("path") or not tok.get("sha256"):
        raise Stage2Error(f"{index_path}: no tokenizer path and sha256: the index is damaged")
    model = comp_dir.parent.parent / tok["path"]  # relative paths are inside the run folder
    if not model.is_file():
        raise Stage2Error(f"{model}: the tokenizer {index_path} was made with is missing: its ids cannot be checked against it")
    if file_sha256(model) != tok["sha256"]:
        raise Stage2Error(f"{model}: sha256 does not match the tokenizer recorded in {index_path}")
    rows = 0
    arrays = []
    for entry in index["shards"]:
        path = folder / entry["file"]
        if not path.exists():
            raise Stage2Error(f"{path}: listed in {index_path} but missing")
        sha = file_sha256(path)
        if sha != entry["sha256"]:
            raise Stage2Error(f"{path}: sha256 {sha[:16]}... does not match {index_path} ({entry['sha256'][:16]}...): the file changed")
        arr = open_shard(path, int(entry["rows"]), seq_len, index["dtype"])  # header and length, as the reader opens it
        if arr.size and int(arr.max()) >= vocab:
            raise Stage2Error(f"{path}: id {int(arr.max())} is out of range for a vocabulary of {vocab}")
        rows += arr.shape[0]
        arrays.append((path, arr))
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
    table = check_documents(folder, index, stream)
    separator = index["eos_id"] if index.get("add_eos") else (index["bos_id"] if index.get("add_bos") else None)
    # Where each document's separator lies in the stream: the last token (EOS) or the first (BOS).
    marks = (table["first"] + (table["tokens"] - 1 if index.get("add_eos") else 0))[table["tokens"] > 0] if separator is not None else None
    covered = rows * seq_len - index["padding"]
    pos = 0
    for path, arr in arrays:
        flat = arr.reshape(-1)[: max(0, covered - pos)]
        if marks is not None:
            _check_marks(path, flat, pos, marks, separator)
        pos += arr.size
    n_format_files = 0
    first_tail = None  # (file, tokens): the tail no npy row holds, which every token file must hold alike
    for entry in index["formats"]:
        tail = check_format_file(comp_dir, folder, index, entry, table, arrays, covered, marks, separator)
        if tail is not None and first_tail is not None and not np.array_equal(tail, first_tail[1]):
            raise Stage2Error(f"{comp_dir / entry['file']}: its last {len(tail)} tokens (the tail no npy row holds) differ from {first_tail[0]}'s")
        if tail is not None and first_tail is None:
            first_tail = (comp_dir / entry["file"], tail)
        n_format_files += 1
    return {"shards": len(index["shards"]), "rows": rows, "tokens": stream, "documents": len(table), "format_files": n_format_files}


def _check_marks(path: Path, flat: np.ndarray, start: int, marks: np.ndarray, separator: int) -> None:
    """The separators in a stretch of a split's stream lie exactly where its document table says."""
    found = np.flatnonzero(flat == separator) + start
    want = marks[(marks >= start) & (marks < start + len(flat))]
    if not np.array_equal(found, want):
        at = found[:len(want)][found[:len(want)] != want[:len(found)]]
        where = int(at[0]) if len(at) else int((found if len(found) > len(want) else want)[min(len(found), len(want))])
        raise Stage2Error(f"{path}: the separators do not lie where the document table says (first difference at stream token {where})")


def check_documents(folder: Path, index: Dict[str, Any], stream: int) -> np.ndarray:
    """A split's document table: its sha256, one row per document, contiguous offsets that cover the stream."""
    entry = index["documents_table"]
    path = folder / entry["file"]
    if not path.is_file():
        raise Stage2Error(f"{path}: listed in {folder / INDEX} but missing")
    if file_sha256(path) != entry["sha256"]:
        raise Stage2Error(f"{path}: sha256 does not match {folder / INDEX}: the file changed")
    table = read_documents(folder)
    if len(table) != index["documents"]:
        raise Stage2Error(f"{path}: {len(table)} documents, {folder / INDEX} says {index['documents']}")
    tokens, first = np.asarray(table["tokens"]), np.asarray(table["first"])
    if len(table) and (first[0] != 0 or not np.array_equal(first[1:], np.cumsum(tokens)[:-1]) or (tokens < 0).any()):
        raise Stage2Error(f"{path}: the documents' first-token offsets are not their running token counts: the table is damaged")
    if int(tokens.sum()) != stream:
        raise Stage2Error(f"{path}: its documents hold {int(tokens.sum())} tokens, {folder / INDEX} says the stream has {stream}")
    return table


def check_format_file(comp_dir: Path, folder: Path, index: Dict[str, Any], entry: Dict[str, Any], table: np.ndarray,
                      arrays: List[Any], covered: int, marks: Any, separator: Any) -> Optional[np.ndarray]:
    """A trainer format's file: its sha256, and its contents against the document table and the npy shards;
    for a token file, the tokens past the npy shards (None for an index or metadata file)."""
    path = comp_dir / entry["file"]
    if not path.is_file():
        raise Stage2Error(f"{path}: listed in {folder / INDEX} but missing")
    if file_sha256(path) != entry["sha256"]:
        raise Stage2Error(f"{path}: sha256 does not match {folder / INDEX}: the file changed")
    lengths = np.asarray(table["tokens"], dtype=np.int64)
    total = int(lengths.sum())
    name = path.name
    if entry["format"] == "megatron" and name.endswith(".idx"):
        dtype, got = read_megatron_idx(path)
        if not np.array_equal(got, lengths):
            raise Stage2Error(f"{path}: its sequence lengths are not the document table's")
        return None
    if entry["format"] == "datatrove" and name.endswith(".index"):
        if not np.array_equal(np.fromfile(path, dtype="<u8"), np.cumsum(lengths)):
            raise Stage2Error(f"{path}: its document ends are not the document table's")
        return None
    if entry["format"] == "datatrove" and name.endswith(".metadata"):
        token_size = np.dtype(next(e for e in index["formats"] if e["format"] == "datatrove" and e["file"].endswith(".ds"))["dtype"]).itemsize
        if path.read_bytes() != datatrove_metadata(index["tokenizer"]["path"], token_size, total):
            raise Stage2Error(f"{path}: not the metadata of its token file")
        return None
    tokens = read_format_tokens(comp_dir, entry)
    if len(tokens) != total:
        raise Stage2Error(f"{path}: {len(tokens)} tokens, the document table {total}")
    pos = 0
    for shard_path, arr in arrays:  # the stream the npy shards hold, token for token
        flat = arr.reshape(-1)[: max(0, covered - pos)]
        if not np.array_equal(tokens[pos : pos + len(flat)], flat):
            raise Stage2Error(f"{path}: differs from {shard_path} (the same stream in the npy shards)")
        pos += len(flat)
    rest = tokens[pos:]  # the dropped tail: not in the shards
    if rest.size and int(rest.max()) >= int(index["vocab_size"]):
        raise Stage2Error(f"{path}: id {int(rest.max())} is out of range for a vocabulary of {index['vocab_size']}")
    if marks is not None:
        _check_marks(path, np.asarray(rest), pos, marks, separator)
    return np.asarray(rest, dtype=np.int64)


def check_filter_stats(stats: Dict[str, Any], stats_path: Path) -> int:
    comps = ((stats.get("stages") or {}).get("filter") or {}).get("components") or {}
    for name, c in comps.items():
        if not isinstance(c, dict) or "records_in" not in c or "kept" not in c:
            raise Stage2Error(f"{stats_path}: filter component {name}: no records_in or kept count: the record is damaged")
        dropped = sum((c.get("dropped") or {}).values())
        if c["records_in"] != c["kept"] + dropped:
            raise Stage2Error(
                f"{stats_path}: filter component {name}: records_in {c['records_in']} != kept {c['kept']} + dropped {dropped}"
            )
    return len(comps)


def check_filter_to_shard(stats: Dict[str, Any], cfg: Dict[str, Any], shards: Path, stats_path: Path) -> None:
    """In a pipeline run the shards are made of this run's filtered parts: every kept document is sharded."""
    comps = ((stats.get("stages") or {}).get("filter") or {}).get("components") or {}
    if not comps or (cfg.get("shard") or {}).get("input_run"):
        return  # no filter step here, or it sharded another run's parts
    for name, c in comps.items():
        index_path = shards / name / INDEX
        if index_path.exists():
            documents = sum(read_json(split_dir(shards / name, s) / INDEX)["documents"] for s in SPLITS)
            if documents != c["kept"]:
                raise Stage2Error(f"{index_path}: {documents} documents sharded but the filter kept {c['kept']} ({stats_path})")


def _listed_files(shards: Path, name: str) -> List[str]:
    """Every file a component's indexes list, relative to the run folder."""
    out = []
    for split in SPLITS:
        folder = split_dir(shards / name, split)
        rel = folder.relative_to(shards.parent).as_posix()
        index = read_json(folder / INDEX)
        out += [f"{rel}/{INDEX}", f"{rel}/{index['documents_table']['file']}"] + [f"{rel}/{s['file']}" for s in index["shards"]]
        out += [f"{SHARDS_DIR}/{name}/{e['file']}" for e in index["formats"]]
    return out


def verify_folder(folder: Path) -> Dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise Stage2Error(f"verify.dir={folder}: {'not a folder' if os.path.lexists(folder) else 'no such folder'}; give a run folder")
    report: Dict[str, Any] = {"folder": str(folder), "components": {}, "filter_components": 0, "artifacts": 0, "parts": 0}
    stats_path = folder / "stats.json"
    if not stats_path.is_file():
        raise Stage2Error(f"{stats_path}: missing: not a stage2 run folder, or its record is gone; nothing can be verified without it")
    stats = read_json(stats_path)
    if not isinstance(stats, dict):
        raise Stage2Error(f"{stats_path}: not a run's record (a JSON object is expected): the file is damaged")
    check_status(folder, stats)
    steps = run_steps(stats, stats_path)
    cfg = check_records(folder, stats)
    report["artifacts"] = check_artifact_hashes(folder, stats)
    recorded: Dict[str, str] = stats["artifact_sha256"]
    report["filter_components"] = check_filter_stats(stats, stats_path)
    if "filter" in steps:
        report["parts"] = check_filtered_parts(folder, recorded)
        if not report["filter_components"]:
            raise Stage2Error(f"{stats_path}: no filter counts per component, but the run's filter step ran")
    if "tokenizer" in steps:
        check_tokenizer_model(folder, recorded)
    shards = folder / SHARDS_DIR
    manifest_path = shards / MANIFEST
    if "shard" in steps:
        if not manifest_path.is_file():
            raise Stage2Error(f"{manifest_path}: missing, but the run's shard step ran")
        names: List[str] = [c["name"] for c in read_json(manifest_path)["components"]]
        if not names:
            raise Stage2Error(f"{manifest_path}: lists no component")
        for name in names:
            report["components"][name] = check_component(shards / name)
            for rel in _listed_files(shards, name):
                if rel not in recorded:
                    raise Stage2Error(f"{folder / rel}: listed in {manifest_path} but not in artifact_sha256 of {stats_path}")
        check_filter_to_shard(stats, cfg, shards, stats_path)
    return report


def run(cfg: Config, run_dir: Path) -> Dict[str, Any]:
    target = cfg.verify.dir
    if not target:
        raise Stage2Error("stage=verify needs verify.dir=<run folder>")
    folder = Path(target) if Path(target).is_absolute() else Path(cfg.launch_dir or ".") / target
    from stage2.stages.report import is_sweep, job_folders

    if not (folder / "stats.json").exists() and folder.is_dir() and is_sweep(folder):
        return verify_sweep(folder, job_folders(folder))
    report = verify_folder(folder)
    n_shards = sum(c["shards"] for c in report["components"].values())
    n_rows = sum(c["rows"] for c in report["components"].values())
    checked = [f"{report['artifacts']} artifacts match stats.json"]
    if report["parts"]:
        checked.append(f"{report['parts']} filtered parts")
    if report["components"]:  # (a filter or tokenizer run has no shards: say nothing of them)
        n_val = sum(c["validation_rows"] for c in report["components"].values())
        n_docs = sum(c["documents"] for c in report["components"].values())
        n_files = sum(c["format_files"] for c in report["components"].values())
        checked.append(
            f"shards of {len(report['components'])} components: {n_shards} shards, {n_rows} rows (+ {n_val} validation rows),"
            f" document tables of {n_docs} documents" + (f", {n_files} trainer format files" if n_files else "")
        )
    if report["filter_components"]:
        checked.append(f"filter stats of {report['filter_components']} components")
    print(f"stage2: verify OK: {folder}: {'; '.join(checked)}")
    return report


def verify_sweep(folder: Path, jobs: List[Path]) -> Dict[str, Any]:
    """Every job folder of a sweep, each as its own run; a failed job (no record: `status failed`) fails too."""
    failed = []
    for job in jobs:
        try:
            verify_folder(job)
        except Stage2Error as exc:
            failed.append(f"{os.path.relpath(job, folder)}: {exc}")
    if not jobs or failed:
        raise Stage2Error(f"{folder}: {len(failed)} of {len(jobs)} jobs of the sweep failed verification; {failed[0] if failed else 'it has no job folder'}")
    print(f"stage2: verify OK: {folder}: {len(jobs)} jobs of the sweep ({', '.join(os.path.relpath(j, folder) for j in jobs)})")
    return {"folder": str(folder), "jobs": [str(j) for j in jobs]}
