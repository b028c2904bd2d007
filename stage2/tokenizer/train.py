"""SentencePiece training: the sample cut into sentences, the trainer, its errors in stage2's terms.

* A literal U+2581 ("▁") stays in the training text, where SentencePiece reads it as a space (a few
  more counts for space pieces): harmless, as encoding spells it in byte pieces, never as a space
  piece (encoding.py), and no rewrite of the text could give SentencePiece those byte pieces to train on.
* SentencePiece trains from an iterator into a BytesIO, so neither an input path nor a model prefix is
  embedded in the model: the same recipe and inputs give the same bytes in any run folder.
* A unigram model's scores are rounded onto a grid right after training (quantize_scores), so that
  its tokenizer.json (export.py) segments every text exactly as SentencePiece does.
"""

from __future__ import annotations

import io
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from stage2.errors import Stage2Error

log = logging.getLogger(__name__)




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

    def __init__(self, sentences: Iterable[str], every: float, label: str, emit: Optional[Callable[[str], None]] = None):
        self._sentences = iter(sentences)
        self._emit = emit or log.info
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
            self._emit(self.line())

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
    progress_emit: Optional[Callable[[str], None]] = None,
) -> bytes:
    """Train SentencePiece on `sentences`; the serialized model, or a one-line Stage2Error.

    `sample_capped`: the per-component quota left documents out; `filtered`: the text is already
    filtered parts. Both only shape the advice of the error message. Progress lines go to
    `progress_emit` (default: the log) every `progress_seconds`.
    """
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    label = f"tokenizer: SentencePiece {options['model_type']} {options['vocab_size']}"
    try:
        with TrainingProgress(sentences, progress_seconds, label, progress_emit) as progress:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(progress), model_writer=buffer, **options)
    except (RuntimeError, OSError) as exc:
        message = " ".join(str(exc).split())
        raise Stage2Error(training_error(message, options, sample_note, sample_capped, filtered)) from None
    if progress_seconds > 0:
        (progress_emit or log.info)(f"{label}: done in {progress.elapsed():.0f} s")
    model = strip_run_specific(buffer.getvalue())
    if options["model_type"] == "unigram":
        model = quantized_unigram(model)
    return model


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


# Unigram piece scores are multiples of 2**-SCORE_GRID_BITS (see quantize_scores).
SCORE_GRID_BITS = 6
SCORE_GRID = 2.0**-SCORE_GRID_BITS
NORMAL_PIECE = 1  # ModelProto.SentencePiece.Type.NORMAL


def on_score_grid(score: float) -> float:
    """`score` rounded to the nearest multiple of SCORE_GRID (halves up)."""
    return math.floor(score / SCORE_GRID + 0.5) * SCORE_GRID


def quantize_scores(proto: Any) -> Any:
    """A copy of a unigram ModelProto with every NORMAL piece's score on the SCORE_GRID grid.

    Why: SentencePiece sums segmentation scores in float32 and HF tokenizers in float64, so near-equal
    segmentations (runs of one character) come out differently. With every score a multiple of 2**-6,
    every partial sum both compute is exact (SentencePiece rebases its running score past 1e5, so its
    sums stay far below float32's 2**(24-6) limit): both see the same ties and break them alike (the
    earliest start wins), so tokenizer.json gives the model's ids. Other piece types are never scored
    by SentencePiece's encoder and keep theirs.
    """
    from sentencepiece import sentencepiece_model_pb2

    out = sentencepiece_model_pb2.ModelProto()
    out.CopyFrom(proto)
    for piece in out.pieces:
        if piece.type == NORMAL_PIECE:
            piece.score = on_score_grid(piece.score)
    return out


def quantized_unigram(model: bytes) -> bytes:
    """The serialized unigram `model` with its scores on the grid (quantize_scores)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    return quantize_scores(proto).SerializeToString(deterministic=True)


VOCAB_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def vocab_text(model: bytes) -> str:
    """`piece<TAB>score` per line, as SentencePiece's own .vocab (scores as C++ prints them).

    Lossless models have pieces with newlines and tabs, which would break its one-line-per-piece
    format: backslash, newline, carriage return and tab are written as \\\\, \\n, \\r and \\t.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    return "".join(f"{sp.id_to_piece(i).translate(VOCAB_ESCAPES)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))


