"""Per-component recipes: a component's own filter settings, `dataset.max_records` as a cap on every
component, and `dataset=files`' weights and lang_filter, as they are composed, checked and resolved.

Only the config side: whether the filter applies them is tested with the filter. The CLI's one-line
refusals are in tests/cli/test_component_recipe_cli.py.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from stage2.config import DatasetConfig
from stage2.errors import Stage2Error
from stage2.io.sources import ComponentSpec, resolve_components

from helpers import compose_plain


def specs_of(overrides, launch_dir):
    plain = compose_plain(list(overrides), launch_dir)
    return {spec.name: spec for spec in resolve_components(plain.dataset, plain.launch_dir)}


@pytest.fixture
def two_files(tmp_path):
    for name in ("web", "code"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"id": name, "text": "x" * 300}) + "\n")
    return tmp_path


# --- resolution ----------------------------------------------------------------------------------------


def test_shipped_sample_code_component_has_no_upper_bound_and_others_follow_the_filter(tmp_path):
    specs = specs_of([], tmp_path)
    code = specs["code"]
    assert code.max_chars == 0 and code.lang_filter is False
    assert (code.min_chars, code.languages, code.dedup) == (None, None, None)
    for name in ("web", "encyclopedia", "noisy"):
        spec = specs[name]
        assert (spec.min_chars, spec.max_chars, spec.languages, spec.dedup, spec.lang_filter) == (None, None, None, None, True), name


def test_refinedweb_mix_code_component_has_no_upper_bound(tmp_path):
    plain = compose_plain(["dataset=refinedweb_mix"], tmp_path)
    comps = plain.dataset.components
    assert comps["code"].max_chars == 0 and comps["code"].lang_filter is False
    assert all(comps[name].max_chars is None for name in comps if name != "code")


def test_component_overrides_from_the_command_line_reach_the_spec(tmp_path):
    specs = specs_of(
        [
            "dataset.components.web.min_chars=50",
            "dataset.components.web.max_chars=20000",
            "dataset.components.web.languages=[en,de]",
            "dataset.components.noisy.dedup=false",
            "dataset.components.encyclopedia.dedup=true",
            "dataset.components.code.max_chars=null",
        ],
        tmp_path,
    )
    web = specs["web"]
    assert (web.min_chars, web.max_chars, web.languages, web.dedup) == (50, 20000, ("en", "de"), None)
    assert isinstance(web.languages, tuple)
    assert specs["noisy"].dedup is False and specs["encyclopedia"].dedup is True
    assert specs["code"].max_chars is None  # back to filter.max_chars


def test_a_manifest_of_ones_own_sets_every_key_in_yaml(tmp_path):
    # A user's manifest on Hydra's search path (as with --config-dir), composed like a shipped one.
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "mine.yaml").write_text(
        "name: mine\n"
        "max_records: 10\n"
        "components:\n"
        "  src:\n"
        "    data_files: [src.jsonl]\n"
        "    min_chars: 0\n"
        "    max_chars: 0\n"
        "    languages: [en, de]\n"
        "    dedup: false\n"
        "    lang_filter: false\n"
        "    max_records: 20\n"
        "  prose:\n"
        "    data_files: [src.jsonl]\n"
        "    min_chars: 300\n"
    )
    (tmp_path / "src.jsonl").write_text(json.dumps({"id": "a", "text": "print(1)"}) + "\n")
    specs = specs_of(["dataset=mine", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], tmp_path)
    src, prose = specs["src"], specs["prose"]
    assert (src.min_chars, src.max_chars, src.languages, src.dedup, src.lang_filter, src.max_records) == (0, 0, ("en", "de"), False, False, 10)
    assert (prose.min_chars, prose.max_chars, prose.languages, prose.dedup, prose.lang_filter, prose.max_records) == (300, None, None, None, True, 10)


def test_filter_settings_fill_what_a_component_leaves_to_the_filter(tmp_path):
    plain = compose_plain(["dataset.components.web.languages=[en,de]", "dataset.components.noisy.dedup=false",
                           "dataset.components.web.min_chars=10", "filter.dedup.near=false"], tmp_path)
    specs = {s.name: s for s in resolve_components(plain.dataset, plain.launch_dir)}
    f = plain.filter
    assert specs["web"].filter_settings(f) == {
        "min_chars": 10, "max_chars": 8000, "languages": ("en", "de"), "lang_filter": True,
        "exact_dedup": True, "near_dedup": False, "quality": (), "url_column": None, "url_filter": True,
    }
    code = specs["code"].filter_settings(f)
    assert code["max_chars"] is None and code["min_chars"] == 200 and code["languages"] == ("en",) and not code["lang_filter"]
    noisy = specs["noisy"].filter_settings(f)
    assert noisy["exact_dedup"] is False and noisy["near_dedup"] is False
    assert ComponentSpec(name="plain").filter_settings(f)["max_chars"] == 8000
    assert code["quality"] == () and ComponentSpec(name="q").filter_settings(dataclasses.replace(f, quality=["c4_quality"]))["quality"] == ("c4_quality",)


@pytest.mark.slow  # over half a second
def test_the_recipe_records_the_component_settings(tmp_path):
    from stage2.runtime.run import config_digest

    base = compose_plain([], tmp_path)
    assert config_digest(base.to_plain()) != config_digest(compose_plain(["dataset.components.code.max_chars=8000"], tmp_path).to_plain())
    assert config_digest(base.to_plain()) != config_digest(compose_plain(["dataset.components.web.dedup=false"], tmp_path).to_plain())


# --- dataset.max_records caps every component ---------------------------------------------------------


@pytest.mark.parametrize(
    "cap,own,expected",
    [
        (100, 60, 60),  # the component's own is smaller: it stays
        (100, 500, 100),  # the cap is smaller: the cap wins (a component's own value used to win)
        (100, None, 100),
        (None, 60, 60),
        (None, None, None),
        (1, 60, 1),  # (0 is refused: it would read nothing)
    ],
)
def test_dataset_max_records_caps_a_component_that_sets_its_own(tmp_path, cap, own, expected):
    overrides = [f"dataset.max_records={'null' if cap is None else cap}",
                 f"dataset.components.code.max_records={'null' if own is None else own}"]
    specs = specs_of(overrides, tmp_path)
    assert specs["code"].max_records == expected
    assert specs["web"].max_records == cap  # (sets none of its own)


@pytest.mark.slow  # over half a second
def test_dataset_max_records_caps_the_hub_mixture_components(tmp_path):
    plain = compose_plain(["dataset=refinedweb_mix", "dataset.max_records=1000"], tmp_path)
    specs = resolve_components(plain.dataset, plain.launch_dir)
    assert [s.max_records for s in specs] == [1000] * 5  # each sets 50,000 to 200,000 of its own
    plain = compose_plain(["dataset=refinedweb_mix", "dataset.max_records=60000"], tmp_path)
    assert {s.name: s.max_records for s in resolve_components(plain.dataset, plain.launch_dir)} == {
        "fineweb": 60000, "wikipedia": 50000, "c4": 60000, "slimpajama": 60000, "code": 50000}


def test_dataset_max_records_bounds_each_path_component(two_files):
    specs = specs_of(["dataset=files", "dataset.paths=[web.jsonl,code.jsonl]", "dataset.max_records=7"], two_files)
    assert [s.max_records for s in specs.values()] == [7, 7]


# --- dataset=files: weights and lang_filter -----------------------------------------------------------


def test_files_dataset_defaults_weight_one_and_language_id_on(two_files):
    specs = specs_of(["dataset=files", "dataset.paths=[web.jsonl,code.jsonl]"], two_files)
    assert list(specs) == ["web", "code"]
    assert [(s.weight, s.lang_filter) for s in specs.values()] == [(1.0, True), (1.0, True)]
    assert all((s.min_chars, s.max_chars, s.languages, s.dedup) == (None, None, None, None) for s in specs.values())


def test_files_dataset_weights_go_to_their_paths_in_order(two_files):
    specs = specs_of(["dataset=files", "dataset.paths=[web.jsonl,code.jsonl]", "dataset.weights=[0.8,0.2]"], two_files)
    assert {n: s.weight for n, s in specs.items()} == {"web": 0.8, "code": 0.2}
    specs = specs_of(["dataset=files", "dataset.paths=[web.jsonl,code.jsonl]", "dataset.weights=[1,3]"], two_files)
    assert {n: s.weight for n, s in specs.items()} == {"web": 1.0, "code": 3.0}


def test_files_dataset_lang_filter_false_applies_to_every_path(two_files):
    specs = specs_of(["dataset=files", "dataset.paths=[web.jsonl,code.jsonl]", "dataset.lang_filter=false"], two_files)
    assert [s.lang_filter for s in specs.values()] == [False, False]


def test_direct_callers_get_the_weights_check_too(two_files):
    dataset = DatasetConfig(paths=["web.jsonl", "code.jsonl"], weights=[1.0])
    with pytest.raises(Stage2Error, match=r"^dataset\.weights"):
        resolve_components(dataset, str(two_files))


# --- range errors: one line at start-up, naming the key -----------------------------------------------

FILES = ["dataset=files", "dataset.paths=[web.jsonl,code.jsonl]"]


@pytest.mark.parametrize(
    "overrides,starts",
    [
        (["dataset.components.code.min_chars=-1"], "dataset.components.code.min_chars=-1 must be 0 or more"),
        (["dataset.components.code.max_chars=-5"], "dataset.components.code.max_chars=-5 must be 0 (no upper bound) or more"),
        (["dataset.components.code.max_records=-1"], "dataset.components.code.max_records=-1 must be 1 or more"),
        (["dataset.components.code.max_records=0"], "dataset.components.code.max_records=0 must be 1 or more (null: no limit)"),
        (["dataset.components.code.format=jsonl"], "dataset.components.code.format=jsonl: the formats are json, parquet, text"),
        (["dataset.components.web.min_chars=500", "dataset.components.web.max_chars=100"],
         "dataset.components.web.min_chars=500 and dataset.components.web.max_chars=100: need min_chars <= max_chars"),
        # against the filter's own bound, which the component leaves as it is
        (["dataset.components.web.min_chars=9000"], "dataset.components.web.min_chars=9000 and filter.max_chars=8000: need min_chars <= max_chars"),
        (["dataset.components.web.max_chars=100"], "filter.min_chars=200 and dataset.components.web.max_chars=100: need min_chars <= max_chars"),
        (["filter.max_chars=1000", "dataset.components.web.min_chars=1500"], "dataset.components.web.min_chars=1500 and filter.max_chars=1000"),
        (["dataset.components.web.languages=[]"], "dataset.components.web.languages is empty"),
        (["dataset.components.web.languages=[en,' ']"], "dataset.components.web.languages=[en, ] holds an empty language name"),
        ([*FILES, "dataset.weights=[1.0]"], "dataset.weights=[1.0] has 1 value for 2 paths in dataset.paths"),
        ([*FILES, "dataset.weights=[1.0,2.0,3.0]"], "dataset.weights=[1.0,2.0,3.0] has 3 values for 2 paths"),
        ([*FILES, "dataset.weights=[1.0,0]"], "dataset.weights=[1.0,0.0]: the weight of 'code.jsonl' is 0.0; every weight must be a positive number"),
        ([*FILES, "dataset.weights=[-1,1]"], "dataset.weights=[-1.0,1.0]: the weight of 'web.jsonl' is -1.0"),
        ([*FILES, "dataset.weights=[inf,1]"], "dataset.weights=[inf,1.0]: the weight of 'web.jsonl' is inf"),
        (["dataset.weights=[0.5]"], "dataset.weights=[0.5] has 1 value for 0 paths in dataset.paths"),  # a manifest has no paths
        (["dataset.lang_filter=false"], "dataset.lang_filter=false applies to dataset.paths (dataset=files) only"),
        (["dataset.max_records=-3"], "dataset.max_records=-3 must be 1 or more"),
        (["dataset.max_records=0"], "dataset.max_records=0 must be 1 or more (null: no limit)"),
        # the shards of a pipeline need ids of the tokenizer it trains: said before the filter runs
        (["shard.remainder=pad", "tokenizer.pad_id=-1"], "shard.remainder=pad but tokenizer.pad_id=-1: the tokenizer this pipeline trains has no pad id"),
        (["shard.add_bos=true", "tokenizer.bos_id=-1"], "shard.add_bos=true but tokenizer.bos_id=-1"),
        (["stage=report", "report.stage=nonsense"], "report.stage=nonsense: the stages are filter, tokenizer, shard"),
        (["stage=report", "report.tokens=inf"], "report.tokens=inf: a token budget is a positive number"),
    ],
)
def test_range_errors_are_one_line_naming_the_key(tmp_path, overrides, starts):
    with pytest.raises(Stage2Error) as info:
        compose_plain(overrides, tmp_path)
    message = str(info.value)
    assert message.startswith(starts), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "overrides",
    [
        ["dataset.components.web.min_chars=9000", "dataset.components.web.max_chars=0"],  # 0: no upper bound
        ["dataset.components.code.min_chars=100000"],  # sample.yaml's code has max_chars: 0
        ["dataset.components.web.min_chars=0", "dataset.components.web.max_chars=0"],
        ["dataset.components.web.max_chars=200"],  # == filter.min_chars
        ["dataset.components.web.languages=[de]", "dataset.components.web.lang_filter=false"],
        [*FILES, "dataset.weights=[0.001,1e3]", "dataset.lang_filter=false"],
        [*FILES, "dataset.weights=[]"],
    ],
)
def test_values_in_range_pass(two_files, overrides):
    compose_plain(overrides, two_files)
