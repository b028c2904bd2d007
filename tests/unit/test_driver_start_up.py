"""Driver start-up shortcuts: Hydra's first composition (the one that only reads `hydra.mode`) is skipped only when
nothing can set hydra.mode (stage2's own configs never do; an override or a config file of the search path may), and
cyclic garbage collection, off while the console script starts, is turned back on."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra._internal.hydra import Hydra
from hydra.core.global_hydra import GlobalHydra
from hydra._internal.utils import create_automatic_config_search_path

from stage2.main import CONF_DIR, _mode_unset


def sources(*extra_dirs: Path) -> list:
    search_path = create_automatic_config_search_path(None, None, CONF_DIR)
    for folder in extra_dirs:
        search_path.prepend(provider="command-line", path=f"file://{folder}")
    try:
        return Hydra.create_main_hydra2(task_name="stage2", config_search_path=search_path).config_loader.get_sources()
    finally:
        GlobalHydra.instance().clear()


def test_stage2s_own_configs_and_usual_overrides_leave_the_mode_unset():
    assert _mode_unset(sources(), ["stage=tokenizer", "tokenizer.input_run=x", "hydra.run.dir=run", "hydra.sweep.dir=s",
                                   "hydra.job.chdir=false", "tokenizer.model_type=unigram", "filter.min_chars=100,400"])


@pytest.mark.parametrize("override", ["hydra.mode=MULTIRUN", "+hydra.mode=MULTIRUN", "hydra/launcher=basic", "hydra=x",
                                      "hydra.searchpath=[file:///elsewhere]"])
def test_an_override_that_may_set_it_asks_hydra(override):
    assert not _mode_unset(sources(), ["stage=filter", override])


@pytest.mark.parametrize("line", ["  mode: MULTIRUN", "mode: RUN", "  searchpath: [file:///elsewhere]", '  "mode": MULTIRUN'])
def test_a_config_file_that_may_set_it_asks_hydra(tmp_path, line):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "sweep.yaml").write_text(f"# @package _global_\nhydra:\n{line}\n")
    assert not _mode_unset(sources(tmp_path), ["stage=filter"])
    (tmp_path / "exp" / "sweep.yaml").write_text("# @package _global_\nfilter:\n  min_chars: 100\n")
    assert _mode_unset(sources(tmp_path), ["stage=filter"])


def test_start_up_garbage_collection_is_turned_back_on_once():
    """The console script starts with collection off; the app turns it on (after freezing start-up's
    objects) once, and leaves it alone when it is on (a sweep's later jobs)."""
    import gc

    from stage2.main import _collect_garbage_from_here

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    _collect_garbage_from_here()
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    gc.disable()
    try:
        _collect_garbage_from_here()
        assert gc.isenabled() and gc.get_freeze_count() > frozen
    finally:
        gc.enable()
        gc.unfreeze()
