"""Tokenizer stage: sample the mixture, train SentencePiece, evaluate on held-out documents.

Pure core (documents in, samples / model bytes / metrics out) plus the thin stage entry `run(run)`.

* Held-out documents are chosen by a hash of the document id alone (fixed salt, not the seed), so a
  sweep over seeds or vocabulary sizes always evaluates on the same documents, and the same documents
  are held out whether the text comes from raw sources or from filtered parts.
* The training sample of a component is the bottom-k of the remaining documents by a seeded xxhash of
  their id: streaming, memory bounded by k, and independent of the order documents arrive in.
* A literal U+2581 ("▁") stays in the training text, where SentencePiece reads it as a space (a few
  more counts for space pieces): harmless, as encoding spells it in byte pieces, never as a space
  piece (encoding.py), and no rewrite of the text could give SentencePiece those byte pieces to train on.
* SentencePiece trains from an iterator into a BytesIO, so neither an input path nor a model prefix is
  embedded in the model: the same recipe and inputs give the same bytes in any run folder.
"""

from __future__ import annotations

import dataclasses
import heapq
import io
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import xxhash

from stage2.config import TokenizerConfig
from stage2.errors import Stage2Error
from stage2.progress import track
from stage2.sources import ComponentSpec, Document
from stage2.tokenizer import encoding, export

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
# In the run folder, written last by a finished training: which model it wrote, and that file's
# fingerprint (a resume keeps the model only while its bytes are those). Not in tokenizer/, which
# holds only what a user loads or uploads.
TRAIN_MARKER = ".tokenizer.done.json"
# A fixed seed for the held-out split: independent of `tokenizer.seed` (see the module docstring).
HELDOUT_HASH_SEED = 0x5EED_4E1D
METRICS = ("bytes_per_token", "chars_per_token", "tokens_per_word", "unk_rate", "byte_fallback_rate", "vocab_used_share", "roundtrip_share")


# ---------------------------------------------------------------- sampling


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # JSON may carry lone surrogates; hash them anyway


def is_heldout(doc_id: str, percent: int) -> bool:
    return percent > 0 and xxhash.xxh64_intdigest(_utf8(doc_id), seed=HELDOUT_HASH_SEED) % 100 < percent


def sample_key(doc_id: str, text: str, seed: int) -> Tuple[int, int]:
    # The text's hash only breaks ties between equal ids (a component may repeat an id).
    return xxhash.xxh64_intdigest(_utf8(doc_id), seed=seed), xxhash.xxh64_intdigest(_utf8(text), seed=seed)


class BottomK:
    """The k items with the smallest keys: a max-heap of size k, so memory stays bounded by k."""

    def __init__(self, k: int):
        self.k = k
        self._heap: List[Tuple[Tuple[int, int], str, str]] = []  # (negated key, id, text)

    def push(self, key: Tuple[int, int], doc_id: str, text: str) -> None:
        if self.k <= 0:
            return
        entry = ((-key[0], -key[1]), doc_id, text)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif entry[0] > self._heap[0][0]:  # a smaller key than the largest kept one
            heapq.heapreplace(self._heap, entry)

    def items(self) -> List[Tuple[Tuple[int, int], str, str]]:
        """(key, id, text) in ascending key order: a canonical order, whatever the input order."""
        return sorted(((-k[0], -k[1]), i, t) for k, i, t in self._heap)


@dataclass
class ComponentSample:
    component: str
    train_ids: List[str] = field(default_factory=list)
    train_texts: List[str] = field(default_factory=list)
    eval_ids: List[str] = field(default_factory=list)
    eval_texts: List[str] = field(default_factory=list)
    docs_seen: int = 0
    heldout_docs: int = 0


def sample_documents(
    component: str, docs: Iterable[Document], quota: int, heldout_percent: int, eval_docs: int, seed: int
) -> ComponentSample:
    """One streaming pass: held-out docs -> eval slice (bottom-k), the rest -> training sample (bottom-k)."""
    train, held = BottomK(quota), BottomK(eval_docs)
    seen = heldout = 0
    for doc in docs:
        if not doc.text:
            continue
        seen += 1
        key = sample_key(doc.id, doc.text, seed)
        if is_heldout(doc.id, heldout_percent):
            heldout += 1
            held.push(key, doc.id, doc.text)
        else:
            train.push(key, doc.id, doc.text)
    out = ComponentSample(component=component, docs_seen=seen, heldout_docs=heldout)
    for _, doc_id, text in train.items():
        out.train_ids.append(doc_id)
        out.train_texts.append(text)
    for _, doc_id, text in held.items():
        out.eval_ids.append(doc_id)
        out.eval_texts.append(text)
    return out


def quotas(specs: List[ComponentSpec], per_component: int, by_weight: bool) -> Dict[str, int]:
    """Training docs per component: equal, or `per_component * n` shared by weight (largest remainder)."""
    if not by_weight:
        return {s.name: per_component for s in specs}
    total_weight = sum(max(s.weight, 0.0) for s in specs)
    if total_weight <= 0:
        raise Stage2Error("tokenizer.sample_by_weight=true but the components' weights add up to 0; set dataset weights")
    total = per_component * len(specs)
    exact = [total * max(s.weight, 0.0) / total_weight for s in specs]
    shares = [int(x) for x in exact]
    # Hand out what rounding down left over, largest remainder first (manifest order breaks ties).
    order = sorted(range(len(specs)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return {s.name: n for s, n in zip(specs, shares)}


# ---------------------------------------------------------------- sentences


def cut_line(line: str, max_bytes: int) -> Iterator[str]:
    """Pieces of at most `max_bytes` UTF-8 bytes, cut at the last whitespace that fits (else mid-word)."""
    data = line.encode("utf-8")
    while len(data) > max_bytes:
        head = data[: max_bytes + 1]
        cut = max(head.rfind(b" "), head.rfind(b"\t"))
        if cut <= 0:
            cut = max_bytes
            while cut > 0 and (data[cut] & 0xC0) == 0x80:  # never split a UTF-8 character
                cut -= 1
            if cut == 0:  # one character longer than max_bytes (a tiny limit): keep it whole, never loop
                cut = 1
                while cut < len(data) and (data[cut] & 0xC0) == 0x80:
                    cut += 1
            piece, data = data[:cut], data[cut:]
        else:
            piece, data = data[:cut], data[cut + 1 :]
        piece_text = piece.decode("utf-8").strip()
        if piece_text:
            yield piece_text
        data = data.lstrip(b" \t")
    rest = data.decode("utf-8").strip()
    if rest:
        yield rest


def split_sentences(text: str, max_bytes: int) -> Iterator[str]:
    """The lossy recipe's training text: a document's non-empty lines, stripped, each cut to `max_bytes`."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if len(line) * 4 <= max_bytes or len(line.encode("utf-8")) <= max_bytes:
            yield line
        else:
            yield from cut_line(line, max_bytes)


def _cut_keeping(line: str, max_bytes: int) -> Iterator[str]:
    """`line` in pieces of at most `max_bytes` bytes that join back to it.

    Cut before the last space that fits, so the next piece starts with " word" as it reads in running
    text; with no space, between characters (one character at least, so a tiny limit never loops).
    """
    data = line.encode("utf-8")
    start = 0
    while len(data) - start > max_bytes:
        end = start + max_bytes
        cut = max(data.rfind(b" ", start + 1, end), data.rfind(b"\t", start + 1, end))
        if cut <= start:
            cut = end
            while cut > start and (data[cut] & 0xC0) == 0x80:
                cut -= 1
            if cut == start:
                cut = start + 1
                while cut < len(data) and (data[cut] & 0xC0) == 0x80:
                    cut += 1
        yield data[start:cut].decode("utf-8")
        start = cut
    if start < len(data):
        yield data[start:].decode("utf-8")


def document_pieces(text: str, max_bytes: int) -> Iterator[str]:
    """A document as training pieces of at most `max_bytes` that join back to it exactly.

    Whole lines, newlines included, are packed into a piece until the next would pass `max_bytes`
    (SentencePiece skips longer sentences); a line longer than that alone is cut at spaces.
    """
    piece: List[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode("utf-8"))
        if size + n > max_bytes and piece:
            yield "".join(piece)
            piece, size = [], 0
        if n > max_bytes:
            yield from _cut_keeping(line, max_bytes)
            continue
        piece.append(line)
        size += n
    if piece:
        yield "".join(piece)


@dataclass
class SentenceCounter:
    sentences: int = 0
    bytes: int = 0


def sentence_stream(texts: Iterable[str], max_bytes: int, counter: SentenceCounter, keep_newlines: bool = True) -> Iterator[str]:
    split = document_pieces if keep_newlines else split_sentences
    for text in texts:
        for sentence in split(text, max_bytes):
            counter.sentences += 1
            counter.bytes += len(sentence.encode("utf-8"))
            yield sentence


# ---------------------------------------------------------------- training


_MAX_VOCAB = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_REQUIRED_CHARS = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def training_error(message: str, options: Dict[str, Any], sample_note: str, sample_capped: bool, filtered: bool) -> str:
    """SentencePiece's failure in terms of the stage2 settings that fix it (its own text otherwise)."""
    found = _MAX_VOCAB.search(message)
    if found:
        # Sampling more only helps when the quota, not the data, limited the sample.
        more = "sample more documents (tokenizer.samples_per_component), " if sample_capped else ""
        return (
            f"tokenizer.vocab_size={found.group(1)} is too large for the training sample{sample_note}: "
            f"it supports at most {found.group(2)} pieces; set tokenizer.vocab_size<={found.group(2)}, "
            f"{more}or make the limit soft with tokenizer.hard_vocab_limit=false"
        )
    found = _REQUIRED_CHARS.search(message)
    if found:
        rest = "byte_fallback covers the rest" if options.get("byte_fallback") else "the rest becomes <unk>"
        filtered_hint = "" if filtered else ", or train on filtered text (tokenizer.input_run=<filter run folder>)"
        # SentencePiece's count includes the special pieces and, with byte_fallback, the 256 byte pieces.
        meta = sum(1 for k in ("unk_id", "bos_id", "eos_id", "pad_id") if int(options.get(k, -1)) >= 0)
        meta += len(options.get("user_defined_symbols") or []) + (256 if options.get("byte_fallback") else 0)
        needed = int(found.group(2))
        return (
            f"tokenizer.vocab_size={found.group(1)} is smaller than the {needed} pieces needed: {needed - meta} "
            f"characters to cover tokenizer.character_coverage={options.get('character_coverage')} of the training "
            f"sample{sample_note} plus {meta} special and byte pieces; raise tokenizer.vocab_size, "
            f"lower tokenizer.character_coverage ({rest}){filtered_hint}"
        )
    return f"SentencePiece training failed{sample_note}: {message.split('] ')[-1]}"


class TrainingProgress:
    """Log lines while SentencePiece trains: it is silent (minutes on a real mixture) until it returns.

    The phase comes from the sentence iterator: SentencePiece first reads every sentence, then trains.
    """

    def __init__(self, sentences: Iterable[str], every: float, label: str):
        self._sentences = iter(sentences)
        self.read = 0
        self.read_bytes = 0
        self.done_reading = False
        self._every = every
        self._label = label
        self._stop = threading.Event()
        self._started = time.time()

    def __iter__(self) -> Iterator[str]:
        for sentence in self._sentences:
            self.read += 1
            self.read_bytes += len(sentence)
            yield sentence
        self.done_reading = True

    def elapsed(self) -> float:
        return time.time() - self._started

    def line(self) -> str:
        elapsed = self.elapsed()
        if self.done_reading:
            return f"{self._label}: training on {self.read} pieces of text ({self.read_bytes / 1e6:.1f} M characters), {elapsed:.0f} s elapsed"
        return f"{self._label}: reading the sample, {self.read} pieces ({self.read_bytes / 1e6:.1f} M characters) so far, {elapsed:.0f} s elapsed"

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            log.info(self.line())

    def __enter__(self) -> "TrainingProgress":
        if self._every > 0:
            threading.Thread(target=self._beat, name="spm-progress", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()


def train_model(
    sentences: Iterable[str],
    options: Dict[str, Any],
    seed: int,
    sample_note: str = "",
    sample_capped: bool = True,
    filtered: bool = False,
    progress_seconds: float = 0.0,
) -> bytes:
    """Train SentencePiece on `sentences`; the serialized model, or a one-line Stage2Error.

    `sample_capped`: the per-component quota left documents out; `filtered`: the text is already
    filtered parts. Both only shape the advice of the error message.
    """
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    label = f"tokenizer: SentencePiece {options['model_type']} {options['vocab_size']}"
    try:
        with TrainingProgress(sentences, progress_seconds, label) as progress:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(progress), model_writer=buffer, **options)
    except (RuntimeError, OSError) as exc:
        message = " ".join(str(exc).split())
        raise Stage2Error(training_error(message, options, sample_note, sample_capped, filtered)) from None
    if progress_seconds > 0:
        log.info("%s: done in %.0f s", label, progress.elapsed())
    return strip_run_specific(buffer.getvalue())


def piece_count(model: bytes) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model).get_piece_size()


def strip_run_specific(model: bytes) -> bytes:
    """Make sure the model embeds no input path or model prefix (training from an iterator leaves none)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:  # protobuf missing: the iterator/writer training path already leaves these empty
        return model
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    spec = proto.trainer_spec
    if not (list(spec.input) or spec.model_prefix):
        return model  # the common case: keep SentencePiece's own bytes untouched
    del spec.input[:]
    spec.model_prefix = ""
    return proto.SerializeToString(deterministic=True)


VOCAB_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def vocab_text(model: bytes) -> str:
    """`piece<TAB>score` per line, as SentencePiece's own .vocab (scores as C++ prints them).

    Lossless models have pieces with newlines and tabs, which would break its one-line-per-piece
    format: backslash, newline, carriage return and tab are written as \\\\, \\n, \\r and \\t.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    return "".join(f"{sp.id_to_piece(i).translate(VOCAB_ESCAPES)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))


# ---------------------------------------------------------------- evaluation


@dataclass
class EvalCounts:
    docs: int = 0
    bytes: int = 0
    chars: int = 0
    words: int = 0
    tokens: int = 0
    unk: int = 0
    byte_pieces: int = 0
    roundtrip: int = 0  # documents that decode back to exactly their text
    used: set = field(default_factory=set)

    def add(self, other: "EvalCounts") -> None:
        for name in ("docs", "bytes", "chars", "words", "tokens", "unk", "byte_pieces", "roundtrip"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.used |= other.used

    def metrics(self, vocab_size: int) -> Dict[str, Any]:
        counts = {"eval_docs": self.docs, "eval_bytes": self.bytes, "eval_tokens": self.tokens}
        if self.docs == 0 or self.tokens == 0:
            # Nothing evaluated: a 0.0 would read (and plot) as a measurement; null says "no data".
            return {**counts, **{name: None for name in METRICS}}
        tokens = self.tokens
        return {
            **counts,
            "bytes_per_token": round(self.bytes / tokens, 4),
            "chars_per_token": round(self.chars / tokens, 4),
            "tokens_per_word": round(self.tokens / max(self.words, 1), 4),
            "unk_rate": round(self.unk / tokens, 6),
            "byte_fallback_rate": round(self.byte_pieces / tokens, 6),
            "vocab_used_share": round(len(self.used) / max(vocab_size, 1), 4),
            "roundtrip_share": round(self.roundtrip / self.docs, 6),
        }


def evaluate(sp: Any, texts: List[str], batch: int = 256) -> EvalCounts:
    """Token counts of `texts` under the processor `sp` (whole documents, as the shard stage encodes them)."""
    counts = EvalCounts()
    unk_id = sp.unk_id()
    byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i)}
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        encoded = encoding.encode(sp, chunk)  # as the shard stage encodes: a literal U+2581 in byte pieces
        for text, ids, back in zip(chunk, encoded, sp.decode(encoded)):
            counts.roundtrip += back == text
            counts.docs += 1
            counts.bytes += len(text.encode("utf-8"))
            counts.chars += len(text)
            counts.words += len(text.split())
            counts.tokens += len(ids)
            counts.unk += sum(1 for i in ids if i == unk_id)
            counts.byte_pieces += sum(1 for i in ids if i in byte_ids)
            counts.used.update(ids)
    return counts


def evaluate_samples(model: bytes, samples: List[ComponentSample]) -> Tuple[int, Dict[str, Any], Dict[str, Any]]:
    """(trained vocab size, metrics per component, metrics over all eval slices pooled)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab_size = sp.get_piece_size()
    overall = EvalCounts()
    components: Dict[str, Any] = {}
    for s in samples:
        counts = evaluate(sp, s.eval_texts)
        if counts.docs == 0:
            log.warning(
                "tokenizer: %s has no held-out documents to evaluate on (%d seen, %d held out); its metrics are null",
                s.component, s.docs_seen, s.heldout_docs,
            )
        overall.add(counts)  # an empty slice adds nothing, so the pooled figures ignore it
        components[s.component] = {
            **counts.metrics(vocab_size),
            "docs_seen": s.docs_seen,
            "heldout_docs": s.heldout_docs,
            "train_docs": len(s.train_texts),
        }
    return vocab_size, components, overall.metrics(vocab_size)


# ---------------------------------------------------------------- stage entry


def model_name(vocab_size: int, model_type: str) -> str:
    """Named after the vocabulary actually trained (fewer pieces than asked with hard_vocab_limit=false)."""
    return f"spm_{int(vocab_size)}_{model_type}"


def write_hf_files(model: bytes, out_dir: Path) -> None:
    """tokenizer.json and its config files next to the model, when the recipe allows an exact export."""
    try:
        export.write(model, out_dir)
    except Stage2Error as exc:
        log.warning("tokenizer: no tokenizer.json written: %s", str(exc).split(": ", 1)[1])


def finished_model(run_dir: Path, key: str) -> Optional[Path]:
    """The model a previous attempt of this run finished (`TRAIN_MARKER`), if its bytes are still the
    ones it wrote; None: train again (a damaged or missing model, a run from before the marker)."""
    from stage2.runtime.tasks import read_marker

    done = read_marker(run_dir / TRAIN_MARKER, key)
    return run_dir / TOKENIZER_DIR / done["model"] if done is not None else None


def _sample_task(task: Tuple[Any, ComponentSpec, Optional[Path], int, int, int, int]) -> ComponentSample:
    """One component's sample, in a worker (top level and plain arguments: it is pickled)."""
    from stage2 import parts

    run, spec, filtered_dir, quota, heldout_percent, eval_docs, seed = task
    docs = parts.component_documents(run, spec, filtered_dir)
    return sample_documents(spec.name, docs, quota, heldout_percent, eval_docs, seed)


def collect_samples(run: Any, t: TokenizerConfig) -> List[ComponentSample]:
    """Every component's training sample and eval slice, in manifest order (parallel over components)."""
    from stage2 import parts

    filtered_dir = parts.filtered_source(run, t.input_run, "tokenizer")
    shares = quotas(run.components, t.samples_per_component, t.sample_by_weight)
    light = dataclasses.replace(run, executor=None)  # workers need no pool, and a pool does not pickle
    tasks = [
        (light, spec, filtered_dir, shares[spec.name], t.heldout_percent, t.eval_docs_per_component, t.seed)
        for spec in run.components
    ]
    mapper = run.executor.map if run.executor is not None else map
    return list(track(mapper(_sample_task, tasks), "tokenizer: sampling", total=len(tasks), unit="component", enabled=run.cfg.progress))


def run(run: Any) -> Dict[str, Any]:
    from stage2.files import atomic_write
    from stage2.runtime.tasks import write_marker

    t: TokenizerConfig = run.cfg.tokenizer
    stats = run.stage_stats("tokenizer")
    started = time.time()

    samples = collect_samples(run, t)
    sampled = time.time()
    train_docs = sum(len(s.train_texts) for s in samples)
    if train_docs == 0:
        raise Stage2Error(f"tokenizer: no training documents in {', '.join(c.name for c in run.components)} (all empty or held out)")
    counter = SentenceCounter()
    texts = (text for s in samples for text in s.train_texts)
    sentences = sentence_stream(texts, t.max_sentence_length, counter, t.keep_newlines)
    out_dir = run.dir / TOKENIZER_DIR
    requested = t.vocab_size
    previous = finished_model(run.dir, run.digest) if run.cfg.resume else None
    resumed = previous is not None
    if previous is not None:
        # Written atomically, so complete; same recipe (checked by start_run), so the same bytes.
        log.info("tokenizer: resume: keeping %s", previous)
        model_path = previous
        model = model_path.read_bytes()
        write_hf_files(model, out_dir)  # made from the model again: a changed tokenizer.json or .vocab cannot stay
        atomic_write(model_path.with_suffix(".vocab"), vocab_text(model))
        for _ in sentences:  # only to count the sample
            pass
    else:
        options = t.trainer_options(verbose=run.cfg.verbose)
        if not options["byte_fallback"]:
            log.warning(
                "tokenizer: tokenizer.byte_fallback=false: characters outside the vocabulary will encode as <unk>, "
                "and a literal U+2581 (\u2581, SentencePiece's space marker) will decode as a space"
            )
        log.info("tokenizer: training %s %s on %d documents", t.model_type, requested, train_docs)
        capped = any(s.docs_seen - s.heldout_docs > len(s.train_texts) for s in samples)
        model = train_model(
            sentences, options, t.seed, sample_note=f" ({train_docs} documents)",
            sample_capped=capped, filtered=bool(t.input_run),
            progress_seconds=float(t.progress_seconds),
        )
        model_path = out_dir / f"{model_name(piece_count(model), str(t.model_type))}.model"
        atomic_write(model_path, model)
        write_hf_files(model, out_dir)
        atomic_write(model_path.with_suffix(".vocab"), vocab_text(model))
        write_marker(run.dir / TRAIN_MARKER, run.digest, {"model": model_path.name}, [model_path])  # last: the model is finished
    vocab_path = model_path.with_suffix(".vocab")
    trained = time.time()
    actual = piece_count(model)
    if actual < requested:
        log.warning(
            "tokenizer: trained %d pieces, fewer than tokenizer.vocab_size=%d (hard_vocab_limit=false and the "
            "sample supports no more); wrote %s", actual, requested, model_path.name,
        )
    run.add_artifact(model_path)
    run.add_artifact(vocab_path)
    hf_json = out_dir / export.TOKENIZER_JSON
    for name in export.EXPORT_FILES:
        if (out_dir / name).exists():
            run.add_artifact(out_dir / name)

    vocab_size, components, overall = evaluate_samples(model, samples)
    if hf_json.exists():
        import sentencepiece as spm
        from tokenizers import Tokenizer

        sp, hf = spm.SentencePieceProcessor(model_proto=model), Tokenizer.from_file(str(hf_json))
        for s in samples:
            components[s.component]["hf_exact_share"] = (
                round(export.agreement(sp, hf, s.eval_texts) / len(s.eval_texts), 6) if s.eval_texts else None
            )
    evaluated = time.time()
    lossy = [c for c, m in components.items() if m["roundtrip_share"] is not None and m["roundtrip_share"] < 1]
    if lossy:
        log.warning(
            "tokenizer: decode(encode(text)) differs from the text on some held-out documents of %s (roundtrip_share in stats.json)%s",
            ", ".join(lossy), "" if t.keep_newlines else "; this recipe squeezes whitespace (tokenizer=lossy)",
        )

    stats.update(
        {
            "model": str(model_path.relative_to(run.dir)),
            "tokenizer_json": str(hf_json.relative_to(run.dir)) if hf_json.exists() else None,
            "vocab_size": vocab_size,
            "vocab_size_requested": requested,
            "model_type": str(t.model_type),
            "num_threads": t.num_threads,
            "resumed": resumed,
            "sample": {
                "docs": train_docs,
                "sentences": counter.sentences,
                "bytes": counter.bytes,
                # SentencePiece keeps at most input_sentence_size of them (a seeded random subset if shuffled).
                "sentences_trained": min(counter.sentences, t.input_sentence_size),
            },
            "components": components,
            "overall": overall,
            "seconds": {
                "sample": round(sampled - started, 3),
                "train": round(trained - sampled, 3),
                "evaluate": round(evaluated - trained, 3),
                "total": round(evaluated - started, 3),
            },
        }
    )
    return {"vocab_size": vocab_size, "bytes_per_token": stats["overall"]["bytes_per_token"]}
