"""`stage2-rerun <run folder> [overrides...]`: run a past run's saved recipe again, into a new folder.

It is the documented long form with the details filled in:
    stage2 --config-path <abs run folder>/.hydra --config-name config [overrides...]
(`resume=true` points the run at the old folder itself.)
The saved `.hydra/config.yaml` carries no schema; the app re-applies it before any work.
"""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = "usage: stage2-rerun <run folder> [key=value ...]"
HELP = f"""{USAGE}

Run a past run's recipe again: its saved .hydra/config.yaml, with relative input paths meaning what they
meant for it. Before any work the input files are compared with the fingerprints in its provenance.json.

  <run folder>               a run folder (outputs/<date>/<time>, or a job folder of a sweep)
  key=value ...              overrides, as for stage2 (e.g. executor.workers=1, stage=filter)
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

The same without this helper: stage2 --config-path <absolute run folder>/.hydra --config-name config
"""


def rerun_argv(folder: str, overrides: list[str]) -> list[str]:
    run_dir = Path(folder).expanduser().resolve()
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise SystemExit(f"stage2-rerun: {run_dir} is not a run folder ({saved} is missing)\n{USAGE}")
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
