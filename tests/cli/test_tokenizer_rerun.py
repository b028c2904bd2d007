"""The tokenizer stage rerun in another folder with another worker count gives byte-identical files."""

from __future__ import annotations

import pytest
from unit.test_tokenizer import model_file, runs, train_run  # noqa: F401  (runs: the fixture)

pytestmark = pytest.mark.slow




def test_rerun_gives_byte_identical_files_in_another_folder_and_worker_count(runs, tmp_path):
    first = runs[1000]
    again = train_run(tmp_path / "elsewhere" / "again", workers=2)
    a, b = model_file(first), model_file(again)
    assert a.name == b.name == "spm_1000_bpe.model"
    assert a.read_bytes() == b.read_bytes()
    assert a.with_suffix(".vocab").read_bytes() == b.with_suffix(".vocab").read_bytes()
    assert first.stage_stats("tokenizer")["overall"] == again.stage_stats("tokenizer")["overall"]
    # Nothing run-specific inside the model: no input path, no model prefix.
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(a.read_bytes())
    assert list(proto.trainer_spec.input) == [] and proto.trainer_spec.model_prefix == ""
    assert proto.trainer_spec.num_threads == 2 and proto.trainer_spec.vocab_size == 1000
    assert str(first.dir).encode() not in a.read_bytes()
