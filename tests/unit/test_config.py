"""Every file in conf/ composes and validates against the schema; bad overrides fail at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

import stage2.main as stage2_main
from stage2.config import Config, validate
from stage2.runtime.run import config_digest
from stage2.errors import Stage2Error
from stage2.io.sources import resolve_components

from helpers import REPO, compose_plain

CONF = Path(stage2_main.CONF_DIR)
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def group_options():
    for group in GROUPS:
        for option in sorted((CONF / group).glob("*.yaml")):
            yield group, option.stem


# dataset_tokenizer is chosen by the dataset and lands in `tokenizer` (conf/config.yaml's defaults list).
PACKAGE = {"dataset_tokenizer": "tokenizer"}


def group_override(group: str, option: str) -> str:
    return f"{group}@{PACKAGE[group]}={option}" if group in PACKAGE else f"{group}={option}"


def kept(composed, validated) -> bool:
    """Every value the composed config holds, the validated one holds too (it adds the schema's defaults)."""
    if isinstance(composed, dict):
        return isinstance(validated, dict) and all(k in validated and kept(v, validated[k]) for k, v in composed.items())
    return composed == validated


@pytest.mark.parametrize("group,option", list(group_options()))
def test_every_config_file_composes_and_validates(group, option, tmp_path):
    overrides = [group_override(group, option)]
    if (group, option) == ("dataset", "files"):
        overrides.append(f"dataset.paths=[{tmp_path}/a.jsonl]")
    with initialize_config_dir(config_dir=stage2_main.CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    # Validating the composed config against a fresh schema must succeed and keep every value.
    plain = OmegaConf.to_container(validate(OmegaConf.to_container(cfg)), resolve=True, enum_to_str=True)
    package = PACKAGE.get(group, group)
    assert kept(OmegaConf.to_container(cfg[package], resolve=True, enum_to_str=True), plain[package])


def test_help_explains_keys_that_exist(tmp_path):
    import re

    import yaml

    footer = yaml.safe_load((CONF / "config.yaml").read_text())["hydra"]["help"]["template"]
    keys = re.findall(r"\b(?:filter|tokenizer|shard|executor|dataset)\.[a-z_.]+[a-z_]", footer)
    assert len(keys) >= 15
    cfg = stage2_main.compose_recipe([], str(tmp_path)).to_plain()
    for key in keys:  # a renamed key would leave the help explaining nothing
        node = cfg
        for part in key.split("."):
            assert part in node, f"--help explains {key}, which the config does not have"
            node = node[part]


def test_groups_present():
    assert set(GROUPS) >= {"dataset", "filter", "tokenizer", "shard", "executor"}


@pytest.mark.parametrize(
    "override,key",
    [("tokenizer.vocab_sise=8000", "vocab_sise"), ("filter.min_chars=abc", "min_chars"), ("stage=bogus", "stage")],
)
def test_bad_override_fails_at_compose_naming_the_key(override, key):
    with initialize_config_dir(config_dir=stage2_main.CONF_DIR, version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)) as info:
            compose("config", overrides=[override])
    assert key in str(info.value) + str(info.value.__cause__)


def test_saved_config_without_schema_is_validated_again():
    # A rerun composes `.hydra/config.yaml`, which has no types: a wrong value must still be caught.
    untyped = OmegaConf.create({"filter": {"min_chars": "abc"}})
    with pytest.raises(ValidationError, match="min_chars"):
        validate(untyped)


def test_sample_manifest_resolves_to_existing_absolute_files(tmp_path):
    plain = compose_plain([], tmp_path)
    comps = plain.dataset.components
    assert list(comps) == ["web", "encyclopedia", "code", "noisy"]
    for comp in comps.values():
        for f in comp.data_files:
            assert Path(f).is_absolute() and Path(f).is_file(), f
    assert comps["code"].lang_filter is False


def test_files_dataset_needs_paths(tmp_path):
    plain = compose_plain(["dataset=files"], tmp_path)
    with pytest.raises(Stage2Error, match="dataset.paths"):
        resolve_components(plain.dataset, str(tmp_path))


@pytest.mark.slow  # over half a second
def test_config_digest_ignores_workers_and_folders_but_not_recipe(tmp_path):
    base = compose_plain([], tmp_path)
    same = compose_plain(["executor.workers=1", "runs_index=/elsewhere/runs.jsonl", "verbose=true"], tmp_path / "other")
    changed = compose_plain(["filter.lang_threshold=0.9"], tmp_path)
    assert config_digest(base.to_plain()) == config_digest(same.to_plain()) == base.digest()
    assert config_digest(base.to_plain()) != config_digest(changed.to_plain())


# The config digest of every shipped group option, the checkout's own path written as /repo (the
# sample's files are absolute paths). A change here re-keys every past run: resume, rerun and the runs
# index would no longer recognise them. The validation split (shard.validation_percent=0.5) changed
# every default shard, and so every digest: at 0 the digests from before it hold (test below).
SHIPPED_DIGESTS = {
    ("dataset", "files"): "d4fec27cae867130",
    ("dataset", "refinedweb_mix"): "72b9993ed5dabec6",
    ("dataset", "sample"): "e6254723d4f93d64",
    ("dataset_tokenizer", "sample"): "e6254723d4f93d64",
    ("executor", "local"): "e6254723d4f93d64",
    ("executor", "ray"): "e6254723d4f93d64",
    ("filter", "default"): "e6254723d4f93d64",
    ("filter", "fasttext"): "ad90deb3aa446323",
    ("filter", "fineweb"): "0fda89e06ee44e0a",
    ("shard", "default"): "e6254723d4f93d64",
    ("tokenizer", "bpe"): "e6254723d4f93d64",
    ("tokenizer", "lossy"): "f80c922a1e7c872d",
    ("tokenizer", "unigram"): "3e239baf504f0dd9",
}


@pytest.mark.slow  # over half a second
def test_a_later_key_leaves_the_digest_at_its_neutral_value_only(tmp_path):
    base = compose_plain([], tmp_path)
    assert compose_plain(["tokenizer.model_max_length=null"], tmp_path).digest() == base.digest()
    assert compose_plain(["tokenizer.model_max_length=4096"], tmp_path).digest() != base.digest()


@pytest.mark.parametrize("option,before", [(("dataset", "sample"), "cd9ffcb0db15aa34"), (("tokenizer", "unigram"), "bd56fc0176d470bd")])
def test_without_a_validation_split_a_recipe_keeps_its_digest_from_before_the_split(option, before, tmp_path):
    recipe = stage2_main.compose_recipe([f"{option[0]}={option[1]}", "shard.validation_percent=0"], str(tmp_path))
    assert config_digest(json.loads(json.dumps(recipe.to_plain()).replace(str(REPO), "/repo"))) == before


def test_every_shipped_option_is_pinned():
    assert set(SHIPPED_DIGESTS) == set(group_options())


@pytest.mark.parametrize("group,option", sorted(SHIPPED_DIGESTS))
def test_shipped_recipes_keep_their_config_digest(group, option, tmp_path):
    recipe = stage2_main.compose_recipe([group_override(group, option)], str(tmp_path))
    relocated = json.loads(json.dumps(recipe.to_plain()).replace(str(REPO), "/repo"))
    assert config_digest(relocated) == SHIPPED_DIGESTS[group, option]


def _container_recipe(overrides, launch_dir: str):
    """The resolved recipe as OmegaConf's own plain data: the composed config merged into the schema,
    resolved with choices as their names, every user-given path made absolute from the launch folder."""
    import os

    with initialize_config_dir(config_dir=stage2_main.CONF_DIR, version_base="1.3"):
        cfg = validate(compose("config", overrides=list(overrides)))
    cfg.launch_dir = launch_dir
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=True)

    def absolute(path):
        return path if path is None or os.path.isabs(path) else os.path.normpath(os.path.join(launch_dir, path))

    plain["dataset"]["paths"] = [absolute(p) for p in plain["dataset"]["paths"]]
    for comp in plain["dataset"]["components"].values():
        if comp["data_files"]:
            comp["data_files"] = [absolute(p) for p in comp["data_files"]]
    for section, key in (("tokenizer", "input_run"), ("shard", "input_run"), ("shard", "tokenizer"), ("report", "dir"), ("verify", "dir")):
        plain[section][key] = absolute(plain[section][key])
    plain["report"]["compare"] = [absolute(p) for p in plain["report"]["compare"]]
    plain["runs_index"] = absolute(plain["runs_index"])
    return plain


OVERRIDES = [[group_override(group, option)] for group, option in sorted(SHIPPED_DIGESTS)] + [
    ["stage=filter", "filter.quality=[c4_quality,gopher_quality]", "dataset.components.web.languages=[en,de]",
     "dataset.components.web.weight=2", "tokenizer.input_run=../x", "shard.tokenizer=y.model", "report.compare=[a,b]",
     "verify.dir=v", "runs_index=r.jsonl", "filter.lang_check=null", "dataset.components.noisy.quality=[]"],
]


@pytest.mark.slow  # about half a second a case (two compositions)
@pytest.mark.parametrize("overrides", OVERRIDES, ids=lambda o: " ".join(o))
def test_the_typed_config_gives_the_plain_recipe_and_yaml_the_container_gives(overrides, tmp_path):
    """Config.to_plain() is what the digest hashes and config.resolved.yaml holds: the same data, keys in
    the same order, as OmegaConf's container of the same composed config."""
    import yaml

    if overrides == ["dataset=files"]:
        overrides = [*overrides, f"dataset.paths=[{tmp_path}/a.jsonl,b/*.jsonl]"]
    typed = stage2_main.compose_recipe(overrides, str(tmp_path))
    container = _container_recipe(overrides, str(tmp_path))
    assert typed.to_plain() == container
    dump = lambda data: yaml.safe_dump(data, sort_keys=False, allow_unicode=True)  # noqa: E731  (as start_run writes it)
    assert dump(typed.to_plain()) == dump(container)
    assert typed.digest() == config_digest(container)


def test_the_shard_buffers_must_fit_in_memory_one_per_split():
    from stage2.config import ShardConfig, _memory_bytes

    rows = _memory_bytes() // 2 // (512 * 4) // 2 + 1  # one buffer fits, two do not
    ShardConfig(sequences_per_shard=rows, validation_percent=0).check()
    with pytest.raises(Stage2Error, match=r"the shard buffers \(2: one per split\)"):
        ShardConfig(sequences_per_shard=rows, validation_percent=0.5).check()


@pytest.mark.parametrize("option_sets,command_line,said", [
    ("vocab_size: 16000\n", [], ["vocab_size"]),
    ("vocab_size: 16000\ncharacter_coverage: 0.9999\n", ["tokenizer.vocab_size=16000"], ["character_coverage"]),
    ("vocab_size: 32000\nmodel_type: unigram\n", [], []),  # bpe's own value: the dataset's file is written against it
])
def test_a_tokenizer_option_the_dataset_settings_replace_is_said(tmp_path, option_sets, command_line, said):
    # dataset_tokenizer/sample.yaml is composed after the tokenizer option: a user's option that sets
    # vocab_size loses to the sample's 8000 without a word, unless this says so.
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "big.yaml").write_text("defaults:\n  - bpe\n  - _self_\n" + option_sets)
    with initialize_config_dir(config_dir=stage2_main.CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["tokenizer=big", f"hydra.searchpath=[file://{tmp_path}]", *command_line], return_hydra_config=True)
    notes = stage2_main.dataset_tokenizer_precedence(cfg.hydra.runtime, OmegaConf.to_container(cfg.tokenizer, resolve=False))
    assert [n.split(" sets ")[1].split(":")[0] for n in notes] == said, notes
    for note in notes:
        assert "dataset_tokenizer/sample.yaml" in note and "on the command line" in note


@pytest.mark.parametrize("given,expected", [
    (["stage=filter", "--config-dir", "conf", "dataset=mine"], ["--config-dir", "conf", "stage=filter", "dataset=mine"]),
    (["a=1", "--cfg", "job", "--resolve", "b=2"], ["--cfg", "job", "--resolve", "a=1", "b=2"]),
    (["--multirun", "x=1,2", "--info", "searchpath", "y=3"], ["--multirun", "--info", "searchpath", "x=1,2", "y=3"]),
    (["x=1", "--info", "y=3"], ["--info", "x=1", "y=3"]),  # --info alone: the next word is an override
    (["~dataset.components.noisy", "-m", "filter.min_chars=-1"], ["-m", "~dataset.components.noisy", "filter.min_chars=-1"]),
])
def test_hydras_options_may_come_between_the_overrides(given, expected):
    # Hydra's parser reads the overrides as one positional list: `stage=filter --config-dir conf dataset=mine`
    # was an 8-line argparse usage error.
    assert stage2_main.options_first(given) == expected
