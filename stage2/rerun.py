"""`stage2-rerun <run folder> [overrides...]`: run a past run's saved recipe again, into a new folder.

It is the documented long form with the details filled in:
    stage2 --config-path <abs run folder>/.hydra --config-name config [overrides...]
(`resume=true` points the run at the old folder itself.)
The saved `.hydra/config.yaml` carries no schema; the app re-applies it before any work.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

USAGE = "usage: stage2-rerun <run folder> [key=value ...]"
HELP = f"""{USAGE}

Run a past run's recipe again: its saved .hydra/config.yaml, with relative input paths meaning what they
meant for it. Before any work the input files are compared with the fingerprints in its provenance.json.

  <run folder>               a run folder (outputs/<date>/<time>, or a job folder of a sweep)
  key=value ...              overrides, as for stage2 (e.g. executor.workers=1, stage=filter)
  group=option ...           another option of a config group (e.g. executor=local, tokenizer=unigram):
                             the rerun changes the keys that choosing it instead of the run's own option
                             changes (stage2's conf today), and keeps every other value of the recipe
  resume=true                continue the run in its own folder (after a crash, kill -9 or a full disk):
                             finished partitions are kept, the rest is redone; refused when the recipe
                             or the inputs changed, or while another process runs in the folder
  allow_changed_inputs=true  run even though the inputs changed since (into a new folder; the result
                             will differ from the old run's)
  hydra.run.dir=<folder>     where to write (default: a new timestamped folder under outputs/)

Examples:
  stage2-rerun outputs/2026-11-25/21-04-07.123456
  stage2-rerun outputs/2026-11-25/21-04-07.123456 executor.workers=1
  stage2-rerun outputs/2026-11-25/21-04-07.123456 resume=true
  stage2-rerun outputs/2026-11-25/21-04-07.123456 executor=local      (a Ray run, on this machine)

The same without this helper: stage2 --config-path <absolute run folder>/.hydra --config-name config
"""


def rerun_argv(folder: str, overrides: list[str]) -> list[str]:
    run_dir = Path(folder).expanduser().resolve()
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise SystemExit(f"stage2-rerun: {run_dir} is not a run folder ({saved} is missing)\n{USAGE}")
    overrides = [*environment_values(run_dir), *group_choices_as_keys(run_dir, overrides)]
    if "resume=true" in overrides:  # continue the run in its own folder
        target = [f"hydra.run.dir={run_dir}"]
    else:
        target = []  # the saved config carries stage2's folder pattern: a new timestamped folder
    # Today's callbacks, whatever module path the saved config names (runs saved before a move).
    extras = [
        "++hydra.callbacks.run_folder_guard._target_=stage2.runtime.callbacks.RunFolderGuard",
        "++hydra.callbacks.sweep_summary._target_=stage2.stages.report.SweepSummaryCallback",
    ]
    if not any(line.startswith("hydra:") for line in saved.read_text(encoding="utf-8").splitlines()):
        # A run saved before stage2 recorded its hydra settings: add them back here.
        extras.append("hydra.job.name=stage2")
        if not target and not any(o.startswith("hydra.run.dir=") for o in overrides):
            target = ["hydra.run.dir=outputs/${now:%Y-%m-%d}/${now:%H-%M-%S.%f}"]
    return ["--config-path", str(run_dir / ".hydra"), "--config-name", "config", *extras, *target, *overrides]


def environment_values(run_dir: Path) -> list[str]:
    """`++key=value` for every value the run read from an environment variable (`${oc.env:...}`), as it
    resolved it (config.resolved.yaml): the recipe is what the run used, not what this shell's variables
    say (a list is given whole). Other interpolations are resolved again, so an override still reaches
    the keys that refer to it."""
    resolved_path = run_dir / "config.resolved.yaml"
    if not resolved_path.is_file():
        return []
    saved, resolved = _load_yaml(run_dir / ".hydra" / "config.yaml"), _load_yaml(resolved_path)
    pins: list[str] = []

    def walk(node, path: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not path and key == "hydra":
                    continue
                walk(value, [*path, str(key)])
        elif isinstance(node, list) and any("${oc.env:" in str(v) for v in node) or isinstance(node, str) and "${oc.env:" in node:
            value = resolved
            for key in path:
                if not isinstance(value, dict) or key not in value:
                    return
                value = value[key]
            pins.append(f"++{'.'.join(path)}={override_value(value)}")
        elif isinstance(node, list):
            for value in node:
                if isinstance(value, (dict, list)) and "${oc.env:" in str(value):
                    raise SystemExit(f"stage2-rerun: {'.'.join(path)} holds ${{oc.env:...}} inside a nested list; give its value on the command line")

    walk(saved, [])
    if pins:
        print(f"stage2-rerun: the values the run read from environment variables: {' '.join(pins)}", file=sys.stderr)
    return pins


def group_choices_as_keys(run_dir: Path, overrides: list[str]) -> list[str]:
    """`group=option` arguments turned into the key overrides they amount to for this run.

    The saved config has no defaults list, so Hydra cannot choose a group's option in it. The run's
    own choices (`.hydra/hydra.yaml`) are composed twice with stage2's conf, as they are and with each
    given option instead; the keys that differ (in any section: a dataset's option also picks its
    tokenizer settings) become `++key=value` / `~key`, in the argument's place, so key overrides after it win.
    """
    config_dirs = [overrides[i + 1] for i, arg in enumerate(overrides[:-1]) if arg == "--config-dir"]
    groups = _group_names(config_dirs)
    chosen = [(i, arg.partition("=")) for i, arg in enumerate(overrides) if arg.partition("=")[0] in groups and "=" in arg]
    if not chosen:
        return overrides
    for _, (key, _, option) in chosen:
        if "," in option or option.startswith(("choice(", "range(", "glob(")):
            raise SystemExit(f"stage2-rerun: {key}={option}: a rerun takes one option of a group; sweep options with stage2 --multirun and the run's own overrides (.hydra/overrides.yaml)")
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    runtime = _load_yaml(hydra_yaml).get("hydra", {}).get("runtime", {}) if hydra_yaml.is_file() else {}
    if not runtime.get("choices"):
        key, _, option = chosen[0][1]
        raise SystemExit(f"stage2-rerun: {hydra_yaml} does not record the run's config groups: give the keys of {key}={option} instead (conf/{key}/{option}.yaml)")
    own = {group: option for group, option in runtime["choices"].items() if group in groups and option is not None}
    search = [src["path"] for src in runtime.get("config_sources", []) if src.get("provider") == "command-line" and src.get("schema") == "file"]
    search += [str(Path(d).expanduser().resolve()) for d in config_dirs]
    before = _compose(own, search)
    after = _compose({**own, **{key: option for _, (key, _, option) in chosen}}, search)
    changes = list(_changed_keys(before, after))
    said = ", ".join(f"{key}={option}" for _, (key, _, option) in chosen)
    print(f"stage2-rerun: {said}: {' '.join(changes) if changes else 'the run already has it (nothing changes)'}", file=sys.stderr)
    taken = {i for i, _ in chosen}
    rest = [arg for i, arg in enumerate(overrides) if i not in taken]
    return rest[: chosen[0][0]] + changes + rest[chosen[0][0] :]


def _group_names(config_dirs: list[str]) -> set[str]:
    """stage2's config groups and those of the user's config folders (folders of YAML files)."""
    from stage2.main import CONF_DIR

    folders = [Path(root).expanduser() for root in [CONF_DIR, *config_dirs]]
    names = {p.name for folder in folders if folder.is_dir() for p in folder.iterdir() if p.is_dir() and any(p.glob("*.yaml"))}
    return names - {"dataset_tokenizer"}  # (chosen by the dataset, never on its own)


def _load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _compose(choices: dict, search: list[str]) -> dict:
    """The recipe (no `hydra:`) that these group choices compose from stage2's conf, unresolved."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from stage2.main import CONF_DIR, hydra_error

    args = [f"{group}={option}" for group, option in choices.items()]
    if search:
        args.append(f"hydra.searchpath=[{','.join('file://' + path for path in search)}]")
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=args)
    except Exception as exc:  # e.g. an option that does not exist: Hydra's error, in one line
        raise SystemExit(f"stage2-rerun: error: {hydra_error(exc)}") from None
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _changed_keys(before: dict, after: dict, prefix: str = ""):
    """`++key=value` for every value `after` sets differently, `~key` for every key it lacks."""
    for key in sorted(set(before) | set(after), key=str):
        path = f"{prefix}{key}"
        if key not in after:
            yield f"~{path}"
        elif isinstance(after[key], dict) and isinstance(before.get(key), dict):
            yield from _changed_keys(before[key], after[key], path + ".")
        elif key not in before or before[key] != after[key]:
            yield f"++{path}={override_value(after[key])}"


def override_value(value) -> str:
    """A value in Hydra's override grammar: strings quoted (`${...}` inside stays an interpolation)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    # Hydra un-escapes backslashes only before a quote and at the string's end.
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(value))
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text) + "'"


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        if args:
            print(HELP, end="")
            raise SystemExit(0)
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [sys.argv[0], *rerun_argv(args[0], args[1:])]
    from stage2.main import main as stage2_main

    stage2_main()


if __name__ == "__main__":
    main()
