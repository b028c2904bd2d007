"""The documentation stays true: the configuration reference is what the schema generates, every code
block is marked (run by tests/cli/test_docs_cli.py, or `no-run`), links resolve, `--help` names real keys;
and the own-data features the docs describe (dataset=files per-path settings, a copied manifest,
max_chars 0/null) behave as they say."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import List, Tuple

import pytest
import yaml
from hydra import compose, initialize_config_dir

import stage2.main as stage2_main
from stage2 import docs_reference
from stage2.config import ComponentConfig, Config
from stage2.errors import Stage2Error
from stage2.io.sources import resolve_components

from helpers import REPO, compose_plain

DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
# Written in other branches at the same time: linked now, checked once they exist.
EXPECTED_LATER = {DOCS / "outputs.md", DOCS / "hygiene.md", DOCS / "scaling.md"}
# A block's info string: what it is, and `no-run` when the docs test does not run it.
RUN_KINDS = {"bash", "python"}
OTHER_KINDS = {"yaml", "text"}
EXAMPLE = REPO / "examples" / "my_mixture"


def fenced_blocks(text: str) -> List[Tuple[str, str]]:
    """(info string, body) of every fenced block."""
    return re.findall(r"^```([^\n]*)\n(.*?)^```\s*$", text, flags=re.M | re.S)


def test_the_configuration_reference_is_what_the_schema_generates():
    assert (DOCS / "configuration.md").read_text(encoding="utf-8") == docs_reference.generate(), (
        "docs/configuration.md is stale: run `uv run python -m stage2.docs_reference --write`"
    )


def test_the_reference_names_every_key_of_the_schema_with_a_meaning():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| [^|]*(?:\\\|[^|]*)* \| (.*) \| (.*) \|$", text, flags=re.M)
    keys = {key: meaning for key, _, meaning in rows}
    for key in ("filter.max_chars", "dataset.components.<name>.sample_by", "tokenizer.vocab_size",
                "filter.dedup.threshold", "filter.gopher_quality.min_stop_words", "shard.seq_len", "executor.workers"):
        assert key in keys
    assert all(meaning.strip() for meaning in keys.values()), [k for k, m in keys.items() if not m.strip()]
    assert "32,000 (default run: 8000)" in text  # the schema's default and the sample's, both said


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_block_is_marked(page):
    for info, body in fenced_blocks(page.read_text(encoding="utf-8")):
        words = info.split()
        assert words, f"{page.name}: a code block without a language: {body[:60]!r}"
        kind, rest = words[0], words[1:]
        assert kind in RUN_KINDS | OTHER_KINDS, f"{page.name}: unknown block kind {info!r}"
        assert rest in ([], ["no-run"]) and (not rest or kind in RUN_KINDS), f"{page.name}: marker {info!r} (use `bash no-run` or `python no-run`)"


def test_the_pages_have_runnable_blocks_where_it_matters():
    readme = fenced_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    runnable = [body for info, body in readme if info == "bash"]
    assert any("dataset=files" in b for b in runnable) and any("--multirun" in b for b in runnable) and any("stage2-rerun" in b for b in runnable)


def _slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if file in EXPECTED_LATER and not file.exists():
            continue
        assert file.exists(), f"{page.name}: link to {target} (no such file)"
        if anchor and file.suffix == ".md":
            slugs = {_slug(h) for h in re.findall(r"^#+ (.*)$", file.read_text(encoding="utf-8"), flags=re.M)}
            assert anchor in slugs, f"{page.name}: link to {target}: no heading with that anchor in {file.name}"


def test_readme_and_index_link_the_pages_written_elsewhere():
    for page in (REPO / "README.md", DOCS / "index.md"):
        text = page.read_text(encoding="utf-8")
        for later in EXPECTED_LATER:
            assert later.name in text, f"{page.name} does not link {later.name}"


def test_help_names_only_keys_the_schema_has_and_no_config_dump():
    hydra_conf = yaml.safe_load((REPO / "conf" / "config.yaml").read_text(encoding="utf-8"))["hydra"]["help"]
    template = hydra_conf["template"]
    assert "$CONFIG" not in template and "$APP_CONFIG_GROUPS" in template and "docs/configuration.md" in template
    keys = re.findall(r"^  ([a-z_]+(?:\.[a-z_<>]+)*)((?:, \.[a-z_]+)*)\s{2,}\S", template, flags=re.M)
    assert len(keys) >= 20
    plain = Config().to_plain()
    for key, more in keys:
        names = [key] + [key.rsplit(".", 1)[0] + "." + m.strip(" .") for m in more.split(",") if m.strip()]
        for name in names:
            node = plain
            for part in name.split("."):
                if part == "<name>":
                    node = ComponentConfig().__dict__
                    continue
                if part == "<key>":  # the lines below it name the keys
                    break
                assert isinstance(node, dict) and part in node, f"--help names {name}, which the schema does not have"
                node = node[part]


# --- own files: dataset=files per-path settings ------------------------------------------------------------


def files_components(tmp_path: Path, overrides: List[str]):
    shutil.copytree(EXAMPLE / "data", tmp_path / "data")
    cfg = compose_plain(["dataset=files", "'dataset.paths=[data/posts.jsonl,data/glossary.txt]'".strip("'"), *overrides], tmp_path)
    return cfg, {s.name: s for s in resolve_components(cfg.dataset, str(tmp_path))}


def test_a_path_takes_its_own_settings_by_its_component_name(tmp_path):
    cfg, specs = files_components(tmp_path, [
        "dataset.text_column=body", "dataset.id_column=post_id", "dataset.lang_filter=false",
        "dataset.components.glossary.sample_by=paragraph", "dataset.components.glossary.weight=0.5",
        "dataset.components.glossary.lang_filter=true", "dataset.components.posts.max_chars=0",
    ])
    posts, glossary = specs["posts"], specs["glossary"]
    assert (posts.text_column, posts.id_column, posts.lang_filter, posts.weight, posts.sample_by) == ("body", "post_id", False, 1.0, "line")
    assert (glossary.text_column, glossary.sample_by, glossary.weight, glossary.lang_filter) == ("text", "paragraph", 0.5, True)
    assert posts.filter_settings(cfg.filter)["max_chars"] is None and glossary.filter_settings(cfg.filter)["max_chars"] == 8000
    # The recipe records each path's settings as they apply.
    assert cfg.dataset.components["glossary"].text_column == "text" and cfg.dataset.components["posts"].id_column == "post_id"


def test_a_component_with_its_own_files_is_named_by_the_user(tmp_path):
    _, specs = files_components(tmp_path, [
        "dataset.text_column=body", "dataset.components.source_code.data_files=[data/code.jsonl.gz]",
        "dataset.components.source_code.text_column=content", "dataset.components.source_code.lang_filter=false",
    ])
    assert list(specs) == ["posts", "glossary", "source_code"]
    assert specs["source_code"].text_column == "content" and not specs["source_code"].lang_filter


def test_an_entry_that_names_no_path_is_refused_naming_the_paths_components(tmp_path):
    with pytest.raises(Stage2Error, match=r"dataset.components.code: no path in dataset.paths gives a component named 'code' \(they give posts, glossary\)"):
        files_components(tmp_path, ["dataset.components.code.lang_filter=false"])


def test_a_misspelt_component_key_fails_at_start_up(tmp_path):
    with pytest.raises(Stage2Error, match=r"dataset.components.web.lang_fliter: no such key in dataset.components.web; did you mean dataset.components.web.lang_filter\?"):
        compose_plain(["dataset.components.web.lang_fliter=false"], tmp_path)
    with pytest.raises(Stage2Error, match=r"dataset.components.web.sample_by=lines: a text file is read by line, paragraph, document"):
        compose_plain(["dataset.components.web.sample_by=lines"], tmp_path)


def test_a_manifest_component_key_is_set_on_the_command_line(tmp_path):
    cfg = compose_plain(["dataset.components.web.lang_filter=false", "dataset.components.code.min_chars=10"], tmp_path)
    assert cfg.dataset.components["web"].lang_filter is False and cfg.dataset.components["code"].min_chars == 10
    assert cfg.dataset.components["web"].data_files  # the manifest's own keys stay


@pytest.mark.slow  # over half a second
@pytest.mark.parametrize("value", ["0", "null"])
def test_max_chars_zero_and_null_mean_no_upper_bound_at_the_top_level_too(value, tmp_path):
    cfg = compose_plain([f"filter.max_chars={value}"], tmp_path)
    web = cfg.dataset.components["web"]
    assert web.filter_settings(cfg.filter)["max_chars"] is None
    with pytest.raises(Stage2Error, match="filter.max_chars=-1 must be 0 or null"):
        compose_plain(["filter.max_chars=-1"], tmp_path)
    with pytest.raises(Stage2Error, match="need min_chars <= max_chars"):
        compose_plain(["filter.min_chars=500", "filter.max_chars=300"], tmp_path)


# --- shipped manifests copy as they are ---------------------------------------------------------------------


@pytest.mark.parametrize("option", ["sample", "refinedweb_mix"])
def test_a_shipped_manifest_copied_into_a_config_dir_gives_the_same_dataset(option, tmp_path):
    (tmp_path / "mine" / "dataset").mkdir(parents=True)
    shutil.copy(REPO / "conf" / "dataset" / f"{option}.yaml", tmp_path / "mine" / "dataset" / "copied.yaml")
    with initialize_config_dir(config_dir=stage2_main.CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "dataset=copied"])
    copied = stage2_main.resolve_config(cfg, str(tmp_path))
    shipped = compose_plain([f"dataset={option}"], tmp_path)
    assert copied.to_plain()["dataset"] == shipped.to_plain()["dataset"]
    assert "@package" not in (REPO / "conf" / "dataset" / f"{option}.yaml").read_text()


def test_the_sample_trains_8000_pieces_other_mixtures_32000(tmp_path):
    assert compose_plain([], tmp_path).tokenizer.vocab_size == 8000
    assert compose_plain(["dataset=refinedweb_mix"], tmp_path).tokenizer.vocab_size == 32000


def test_the_example_manifest_folder_composes_from_its_own_folder(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(EXAMPLE, folder)
    with initialize_config_dir(config_dir=stage2_main.CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{folder}]", "dataset=my_mixture"])
    config = stage2_main.resolve_config(cfg, str(folder))
    specs = {s.name: s for s in resolve_components(config.dataset, str(folder))}
    assert list(specs) == ["posts", "glossary", "code"] and config.tokenizer.vocab_size == 2000
    assert all(Path(f).is_relative_to(folder) for s in specs.values() for f in s.files)
