"""The step interface: a chain judges each document once, in order; the registry orders a component's
chain and refuses steps the schema could not configure; the README's example step is a whole file that
the real CLI picks up with no other edit."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import pytest

from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.steps import STEPS, Chain, Step, chain_settings, optional_steps, register
from stage2.steps.length import Invalid, InvalidSettings, Length, LengthSettings

from helpers import REPO, compose_plain


def doc(text, i=1, problem=None):
    return Document(id=f"d{i}", text=text, component="c", source="s", record=i, problem=problem)


README = REPO / "docs" / "filter.md"  # where "Adding a step" lives


def readme_step_file() -> str:
    """The python block of docs/filter.md's "Adding a step": the whole file of a new step."""
    return re.search(r"## Adding a step\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)


@pytest.fixture
def readme_step():
    """The README's step, registered in this process for the test only."""
    namespace = {}
    exec(compile(readme_step_file(), "docs/filter.md", "exec"), namespace)
    try:
        yield namespace
    finally:
        STEPS.pop("max_digits", None)


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


def test_the_readme_example_step_registers_and_judges(readme_step):
    step = STEPS["max_digits"](readme_step["MaxDigitsSettings"]())
    assert step.judge([doc("1234 is a number"), doc("no digits here")]) == [None, None]  # 4 of 16 characters
    [drop] = step.judge([doc("12345 abc")])
    assert drop.reason == "max_digits" and drop.detail == "digit_frac=0.556 > 0.3"
    assert "max_digits" in optional_steps()
    assert readme_step["MaxDigitsSettings"](1.5).check("filter.max_digits") == [
        (False, "filter.max_digits.max_digit_frac=1.5 must be between 0 and 1")
    ]


def test_the_chain_runs_cheapest_first_and_named_steps_of_equal_order_as_named(readme_step, tmp_path):
    f = compose_plain(["stage=filter"], tmp_path).filter
    f.max_digits = readme_step["MaxDigitsSettings"](0.3)  # (FilterConfig was built before this test registered the step)
    own = {"min_chars": 10, "max_chars": None, "languages": ("de",), "lang_filter": True,
           "quality": ("fineweb_quality", "max_digits", "gopher_repetition")}
    chain = chain_settings(own, f)
    # max_digits (order 15) runs before language ID (20); the quality steps (30) in the order named.
    assert [name for name, _ in chain] == ["invalid", "length", "max_digits", "language", "fineweb_quality", "gopher_repetition"]
    settings = dict(chain)
    assert settings["length"] == {"min_chars": 10, "max_chars": None}
    assert settings["language"]["languages"] == ("de",) and settings["max_digits"] == {"max_digit_frac": 0.3}
    assert settings["fineweb_quality"] == asdict(f.fineweb_quality)
    no_language = chain_settings({**own, "lang_filter": False, "quality": ()}, f)
    assert [name for name, _ in no_language] == ["invalid", "length"]


def test_the_registry_refuses_steps_the_schema_could_not_configure():
    @dataclass(frozen=True)
    class Frozen:
        limit: float = 0.5

    class NoOrder(Step):
        name = "no_order"
        Settings = Frozen

    class FrozenSettings(Step):
        name = "frozen_settings"
        Settings = Frozen
        order = 40

    with pytest.raises(TypeError, match="'no_order' has no `order`"):
        register(NoOrder)
    with pytest.raises(TypeError, match=r"'frozen_settings': its Settings must be a plain @dataclass \(not frozen\)"):
        register(FrozenSettings)
    assert "no_order" not in STEPS and "frozen_settings" not in STEPS


