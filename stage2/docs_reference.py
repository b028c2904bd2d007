"""docs/configuration.md, generated from the schema (stage2/config.py and the filter steps' settings).

    uv run python -m stage2.docs_reference            # print the reference
    uv run python -m stage2.docs_reference --write    # rewrite docs/configuration.md

A key's meaning is the comment on its line in the schema (or, for keys without one, `MEANINGS` below);
its default is the schema's. Where the default run (`uv run stage2`, dataset=sample) composes another
value from conf/, the reference says so. tests/unit/test_docs.py fails when docs/configuration.md is not
what this module gives, so the reference cannot drift from the schema.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from stage2 import config as schema

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# Meanings of the keys whose schema line carries no comment.
MEANINGS: Dict[str, str] = {
    "stage": "the stage to run: pipeline (filter, tokenizer, shard in one folder), filter, tokenizer, shard, report, verify",
    "verbose": "Python tracebacks on errors and SentencePiece's own log",
    "progress": "progress bars and an ETA per stage on the terminal",
    "resume": "continue an interrupted or failed run in its own folder (`hydra.run.dir=<folder>`, or `stage2-rerun <folder> resume=true`)",
    "allow_changed_inputs": "let a rerun (`stage2-rerun`) run although its input files changed since the recorded run (never a resume)",
    "dataset.name": "the mixture's name (recorded in stats and the runs index)",
    "dataset.components": "the mixture's components by name: see `dataset.components.<name>.*`",
    "dataset.paths": "`dataset=files`: files or globs, one component per path, named after its file stem (relative: from the launch directory)",
    "dataset.text_column": "`dataset=files`: the column holding the text (a path's own: `dataset.components.<name>.text_column`)",
    "dataset.id_column": "`dataset=files`: the column holding a record's id (null, or missing in a record: `<component>/<file>/<record>`)",
    "dataset.components.<name>.split": "the hub dataset's split",
    "dataset.components.<name>.text_column": "the column holding the text",
    "dataset.components.<name>.weight": "the component's mixture weight (positive; the shards' manifest and the reader use it)",
    "filter.min_chars": "documents shorter than this many characters are dropped (`too_short`)",
    "filter.languages": "the languages to keep, as the detector names them (en, de, zh-cn ...)",
    "filter.lang_backend": "the main language detector: langdetect_fast (langdetect's answers, vectorised), langdetect, fasttext",
    "filter.lang_check_threshold": "the probability `lang_check` must give a wanted language",
    "filter.function_words": "the least share of a document's words that are the wanted language's function words (0: no check; lists ship for English)",
    "filter.dedup": "exact and near dedup: see `filter.dedup.*`",
    "filter.on_bad_record": "a record without usable text (bad JSON, no text column, bad UTF-8): fail names it; skip counts it as `invalid`",
    "filter.dedup.exact": "drop documents whose normalised text an earlier document has (`duplicate`)",
    "filter.dedup.near": "drop documents most of whose word windows occur earlier (`near_duplicate`)",
    "tokenizer.model_type": "SentencePiece's algorithm: bpe or unigram",
    "tokenizer.vocab_size": "pieces in the vocabulary (the default run's sample mixture: 8000, from conf/dataset_tokenizer/sample.yaml)",
    "tokenizer.hard_vocab_limit": "fail when SentencePiece finds no more pieces in the sample than vocab_size (unigram: its own limit; BPE: no pair left to merge); false: train as many as it finds",
    "tokenizer.character_coverage": "the share of the sample's characters that get pieces of their own; byte fallback spells the rest",
    "tokenizer.byte_fallback": "spell characters outside the vocabulary as UTF-8 byte pieces (needed for a lossless tokenizer)",
    "tokenizer.split_digits": "split numbers into single digits",
    "tokenizer.normalization_rule_name": "SentencePiece's normalisation (identity: none; nmt_nfkc: NFKC, lossy)",
    "tokenizer.remove_extra_whitespaces": "squeeze runs of whitespace (lossy)",
    "tokenizer.add_dummy_prefix": "put a space before every text (lossy for text that does not start with one)",
    "tokenizer.allow_whitespace_only_pieces": "pieces made of whitespace alone (indentation runs, blank lines)",
    "tokenizer.split_by_whitespace": "never merge across a space",
    "tokenizer.unk_id": "the id of the unknown piece",
    "tokenizer.bos_id": "the id of <s> (-1: none)",
    "tokenizer.eos_id": "the id of </s>, which the shards put after every document (-1: none)",
    "tokenizer.pad_id": "the id of <pad> (-1: none; shard.remainder=pad needs one)",
    "tokenizer.user_defined_symbols": "pieces always kept whole (write \u2581 for a space)",
    "tokenizer.num_threads": "SentencePiece's training threads; part of the recipe: another count learns another vocabulary",
    "tokenizer.seed": "the seed of the training sample and of SentencePiece",
    "tokenizer.samples_per_component": "documents sampled from each component to train on",
    "tokenizer.eval_docs_per_component": "held-out documents per component that bytes/token and the round trip are measured on (0: none)",
    "tokenizer.input_sentence_size": "SentencePiece's cap on training sentences (0: all)",
    "tokenizer.shuffle_input_sentence": "SentencePiece samples its input_sentence_size sentences at random",
    "shard.seq_len": "tokens per row of the shards",
    "shard.sequences_per_shard": "rows per .npy shard file",
    "shard.remainder": "the tail of a component that fills no whole row: drop, or pad with the pad id",
    "shard.add_bos": "put <s> before every document",
    "shard.add_eos": "put </s> after every document",
    "executor.kind": "where tasks run: local (a process pool) or ray (`executor=ray`)",
    "runs_index": "the file every finished run appends its line to (relative: from the launch directory); `stage=report` lists it",
    "filter.lang_threshold": "the probability the main detector must give a wanted language (by default the backend's calibrated threshold: 0.85 for langdetect and langdetect_fast, 0.4 for fasttext)",
    "filter.lang_check": "a second, cheaper detector run before the main one that must also find a wanted language (null: none)",
    "report.dataset": "`stage=report` lists only the runs of this dataset (its name)",
    "filter.gopher_quality.min_doc_words": "fewer words drops the document",
    "filter.gopher_quality.max_doc_words": "more words drops the document",
    "filter.gopher_quality.max_avg_word_length": "a longer mean word length (characters) drops the document",
    "filter.gopher_quality.stop_words": "the stop words `min_stop_words` counts",
    "filter.c4_quality.min_words_per_line": "a line with fewer words is not kept (-1: off)",
    "filter.fineweb_quality.short_line_length": "a line of at most this many characters is short (`short_line_thr`)",
}
for _n in (3, 4):
    MEANINGS[f"filter.gopher_repetition.top_{_n}_gram"] = f"the same as top_2_gram, for word {_n}-grams"
for _n in range(6, 11):
    MEANINGS[f"filter.gopher_repetition.dup_{_n}_gram"] = f"the same as dup_5_gram, for word {_n}-grams"


def _comments(cls: type) -> Dict[str, str]:
    """A dataclass's field -> the comment on its line, else the comment lines right above it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    lines = source.splitlines()
    trailing: Dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            trailing[tok.start[0]] = tok.string.lstrip("#").strip()
    out: Dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        name = stripped.split(":", 1)[0]
        if name not in names or name in out or not line.startswith("    ") or line.startswith("     "):
            continue
        if number in trailing and not stripped.startswith("#"):
            out[name] = trailing[number]
            continue
        above, n = [], number - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, lines[n - 1].strip().lstrip("#").strip())
            n -= 1
        if above:
            out[name] = " ".join(above)
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin is typing.Union:
        return f"{_type_name(args[0])} or null"
    if origin in (list, List):
        return f"list of {_type_name(args[0])}"
    if origin in (dict, Dict):
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return " \\| ".join(m.value for m in tp)
    if dataclasses.is_dataclass(tp):
        return "group"
    return getattr(tp, "__name__", str(tp))


def _value(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value).replace("|", "\\|") if value.strip() != value or not value or "\\" in repr(value) else value
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "..."
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10000 else str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default == "???":  # omegaconf.MISSING: a group option sets it
        return "(set by the option)"
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "(required)"


def _rows(cls: type, prefix: str, default_run: Dict[str, Any]) -> Tuple[List[List[str]], List[Tuple[str, type]]]:
    """Rows (key, type, default, meaning) of one group; the nested groups to list after it."""
    hints = typing.get_type_hints(cls)
    comments = _comments(cls)
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            comments = {**_comments(base), **comments}
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and f.name != "dataset":
            nested.append((key, tp))
            if key not in MEANINGS and not comments.get(f.name):
                continue
        meaning = MEANINGS.get(key) or comments.get(f.name) or ""
        default = _default(f)
        if dataclasses.is_dataclass(default):
            default_text = f"see `{key}.*`"
        else:
            default_text = _value(default)
            run = default_run.get(key, default)
            if isinstance(run, Enum):
                run = run.value
            machine_path = isinstance(run, str) and run.startswith("/")  # made absolute from where it ran
            if not isinstance(default, (dict, list)) and not machine_path and run != (default.value if isinstance(default, Enum) else default):
                default_text += f" (default run: {_value(run)})"
        rows.append([f"`{key}`", _type_name(tp), default_text, meaning.replace("|", "\\|")])
    return rows, nested


def _table(rows: List[List[str]]) -> str:
    return "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *("| " + " | ".join(r) + " |" for r in rows)])


def _default_run() -> Dict[str, Any]:
    """Scalar values of the default run's recipe (`uv run stage2`), by dotted key."""
    import stage2.main as stage2_main

    plain = stage2_main.compose_recipe([], "/").to_plain()
    flat: Dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and prefix != "dataset.components.":
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(plain, "")
    return flat


SECTIONS = [
    ("Top level", "", "the stage, and how a run behaves; none of these but `stage` changes an artifact"),
    ("dataset", "dataset.", "the mixture: `dataset=sample` (default), `refinedweb_mix`, `files`, or your own manifest (`--config-dir`)"),
    ("dataset.components.<name>", "dataset.components.<name>.", "one component of a manifest, or one path's settings under `dataset=files` (by its component's name); null filter keys take `filter.<key>`"),
    ("filter", "filter.", "`filter=default` (default), `fasttext`, `fineweb`"),
    ("tokenizer", "tokenizer.", "`tokenizer=bpe` (default), `unigram`, `lossy`; SentencePiece's own keys keep their names"),
    ("shard", "shard.", "`shard=default`"),
    ("executor", "executor.", "`executor=local` (default), `ray`; never changes an artifact"),
    ("report", "report.", "`stage=report`"),
    ("verify", "verify.", "`stage=verify`"),
]


def generate() -> str:
    default_run = _default_run()
    classes = {
        "": schema.Config,
        "dataset.": schema.DatasetConfig,
        "dataset.components.<name>.": schema.ComponentConfig,
        "filter.": schema.FilterConfig,
        "tokenizer.": schema.TokenizerConfig,
        "shard.": schema.ShardConfig,
        "executor.": schema.ExecutorConfig,
        "report.": schema.ReportConfig,
        "verify.": schema.VerifyConfig,
    }
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `uv run python -m stage2.docs_reference --write` from the schema (stage2/config.py and",
        "the filter steps' settings); tests/unit/test_docs.py fails when this file differs. Do not edit by hand. -->",
        "",
        "Every key of the config, its type, default and meaning. Set any of them on the command line",
        "(`key=value`), in a YAML file of a config group, or sweep them (`--multirun key=a,b`). A misspelt key",
        "or a wrong type fails at start-up. `(default run: ...)` marks where `uv run stage2` (the sample",
        "mixture) composes another value from `conf/`. `uv run stage2 --cfg job [overrides]` prints a composed config (`--resolve` fills in its `${...}` values).",
        "",
    ]
    for title, prefix, what in SECTIONS:
        rows, nested = _rows(classes[prefix], prefix, default_run)
        if prefix == "":
            nested = []  # each group has its own section
        rows = [r for r in rows if not r[0].startswith("`stage2_") and r[0] not in ("`launch_dir`", "`rerun_of`")] + (
            [["`launch_dir`", "str or null", "null", "filled in at start: the directory relative paths are read from"],
             ["`rerun_of`", "str or null", "null", "filled in by a rerun: the run whose recipe it repeats"]] if prefix == "" else [])
        rows = [r for r in rows if not (prefix == "" and r[2].startswith("see `"))]
        out += [f"## {title}", "", what[0].upper() + what[1:] + ".", "", _table(rows), ""]
        for key, cls in nested:
            sub_rows, _ = _rows(cls, f"{key}.", default_run)
            doc = (cls.__doc__ or "").strip()
            doc = "" if doc.startswith(cls.__name__ + "(") else " ".join(doc.split("\n\n")[0].split())  # (dataclass's own signature)
            if key.startswith("filter.") and key != "filter.dedup":
                when = "it runs when `filter.quality` names it" if key[7:] in schema.QUALITY_STEPS else "its own keys switch it on: [hygiene.md](hygiene.md)"
                doc = f"The settings of the optional step `{key[7:]}` ({when}). {doc}".strip()
            out += [f"### {key}", "", *( [doc, ""] if doc else []), _table(sub_rows), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    text = generate()
    if "--write" in argv:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
