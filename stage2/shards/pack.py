"""Pure core of the shard stage: token streams -> fixed-length rows -> shards (`format.write_shard`).

A component's documents become one token stream (each document followed by EOS, preceded by BOS
when asked), which is cut into rows of `seq_len` tokens and written as shards of up to
`rows_per_shard` rows. Only one shard's worth of tokens is ever held in memory, so memory is set by
the config (seq_len x rows_per_shard), not by the corpus size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from stage2.errors import Stage2Error
from stage2.shards.format import PackResult, shard_name, write_shard  # noqa: F401  (PackResult: the packer's result)


class Packer:
    """Feed token chunks in stream order; full shards are written as soon as they fill."""

    def __init__(self, out_dir: Path, seq_len: int, rows_per_shard: int, dtype: np.dtype, on_shard=None):
        if seq_len < 2:
            raise Stage2Error(f"shard.seq_len={seq_len}: a row needs at least 2 tokens (an input and its next-token target)")
        if rows_per_shard < 1:
            raise Stage2Error(f"shard.sequences_per_shard={rows_per_shard} must be at least 1")
        self.out_dir = Path(out_dir)
        self.seq_len = seq_len
        self.rows_per_shard = rows_per_shard
        self.dtype = np.dtype(dtype)
        self.on_shard = on_shard  # called with each written shard's path
        self._buf = np.empty(seq_len * rows_per_shard, dtype=self.dtype)
        self._fill = 0
        self.result = PackResult()

    def add(self, tokens: np.ndarray) -> None:
        """Copy a chunk (an array or a memmap) into the shard buffer, flushing every full shard."""
        n, pos = len(tokens), 0
        self.result.stream_tokens += n
        while pos < n:
            take = min(n - pos, len(self._buf) - self._fill)
            self._buf[self._fill : self._fill + take] = tokens[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == len(self._buf):
                # Emptied before the flush, so `on_shard` sees the state a checkpoint can resume from.
                self._fill = 0
                self._flush(self._buf)

    @property
    def position(self) -> int:
        """Stream tokens fed so far (the next token's offset in the component's stream)."""
        return self.result.stream_tokens

    def state(self) -> Dict[str, Any]:
        """A checkpoint, taken when the buffer is empty (right after a full shard): what `restore` needs."""
        if self._fill:
            raise ValueError("a packer checkpoint needs an empty buffer (take it right after a full shard)")
        return {"rows": self.result.rows, "shards": [dict(s) for s in self.result.shards]}

    def restore(self, state: Dict[str, Any]) -> None:
        """Continue after the shards of a checkpoint: feed the stream from token rows * seq_len on."""
        if self.result.stream_tokens or self.result.shards:
            raise ValueError("restore a checkpoint into a fresh packer only")
        self.result.rows = int(state["rows"])
        self.result.shards = [dict(s) for s in state["shards"]]
        self.result.stream_tokens = self.result.rows * self.seq_len

    def rows_at_finish(self, remainder: str) -> int:
        """The rows `finish(remainder)` would leave."""
        full, tail = divmod(self._fill, self.seq_len)
        return self.result.rows + full + int(bool(tail) and remainder == "pad")

    def finish(self, remainder: str, pad_id: Optional[int]) -> PackResult:
        """Write the last, partial shard; the tail that does not fill a row is dropped or padded."""
        full = self._fill // self.seq_len
        tail = self._fill - full * self.seq_len
        rows = full
        if tail:
            if remainder == "pad":
                if pad_id is None or pad_id < 0:
                    raise Stage2Error("shard.remainder=pad but the tokenizer has no pad id; train it with a pad_id or use shard.remainder=drop")
                self._buf[self._fill : (full + 1) * self.seq_len] = pad_id
                self.result.padding = self.seq_len - tail
                rows += 1
            elif remainder == "drop":
                self.result.tail_dropped = tail
                self.result.tail = self._buf[full * self.seq_len : self._fill].copy()
            else:
                raise Stage2Error(f"shard.remainder={remainder!r}: use drop or pad")
        if rows:
            self._flush(self._buf[: rows * self.seq_len])
        self._fill = 0
        return self.result

    def _flush(self, flat: np.ndarray) -> None:
        rows = flat.reshape(-1, self.seq_len)
        path = self.out_dir / shard_name(len(self.result.shards))
        self.result.shards.append(write_shard(path, rows))
        self.result.rows += rows.shape[0]
        if self.on_shard is not None:
            self.on_shard(path)


