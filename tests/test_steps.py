"""The step interface: a chain judges each document once, in order; the README's example step works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.steps import STEPS, Chain
from stage2.steps.length import Invalid, InvalidSettings, Length, LengthSettings

README = Path(__file__).resolve().parent.parent / "README.md"


def doc(text, i=1, problem=None):
    return Document(id=f"d{i}", text=text, component="c", source="s", record=i, problem=problem)


def test_a_chain_gives_each_document_the_first_failing_steps_verdict():
    seen = []

    class Spy(Length):  # (not registered) records what reached it
        def judge(self, docs):
            seen.extend(d.id for d in docs)
            return super().judge(docs)

    chain = Chain([Invalid(InvalidSettings("skip")), Length(LengthSettings(3, 10)), Spy(LengthSettings(5, None))])
    docs = [doc(None, 1, "text column 'text' is null"), doc("ab", 2), doc("abcd", 3), doc("abcdef", 4), doc("x" * 11, 5)]
    verdicts = chain.judge(docs)
    assert [v and v.reason for v in verdicts] == ["invalid", "too_short", "too_short", None, "too_long"]
    assert verdicts[2].detail == "chars=4 < 5" and verdicts[4].values == {"chars": 11}
    assert seen == ["d3", "d4"]  # only what the steps before kept
    assert chain.reasons == ("invalid", "too_short", "too_long")


def test_invalid_records_fail_the_run_unless_skipped():
    with pytest.raises(Stage2Error, match=r"^s: record 7: bad bytes$"):
        Invalid(InvalidSettings("fail")).judge([doc(None, 7, "bad bytes")])


def test_the_readme_example_step_registers_and_judges():
    block = re.search(r"\*\*Adding a step\.\*\*.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    step = STEPS["max_digits"](namespace["MaxDigitsSettings"]())
    assert step.judge([doc("1234 is a number"), doc("no digits here")]) == [None, None]  # 4 of 16 characters
    [drop] = step.judge([doc("12345 abc")])
    assert drop.reason == "max_digits" and drop.detail == "digit_frac=0.556 > 0.3"
