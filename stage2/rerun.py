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


def rerun_argv(folder: str, overrides: list[str]) -> list[str]:
    run_dir = Path(folder).expanduser().resolve()
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise SystemExit(f"stage2-rerun: {run_dir} is not a run folder ({saved} is missing)\n{USAGE}")
    if "resume=true" in overrides:  # continue the run in its own folder
        target = [f"hydra.run.dir={run_dir}"]
    else:
        target = []  # the saved config carries stage2's folder pattern: a new timestamped folder
    extras = []
    if not any(line.startswith("hydra:") for line in saved.read_text(encoding="utf-8").splitlines()):
        # A run saved before stage2 recorded its hydra settings: add them back here.
        extras = [
            "hydra.job.name=stage2",
            "+hydra.callbacks.run_folder_guard._target_=stage2.callbacks.RunFolderGuard",
            "+hydra.callbacks.sweep_summary._target_=stage2.report.SweepSummaryCallback",
        ]
        if not target and not any(o.startswith("hydra.run.dir=") for o in overrides):
            target = ["hydra.run.dir=outputs/${now:%Y-%m-%d}/${now:%H-%M-%S.%f}"]
    return ["--config-path", str(run_dir / ".hydra"), "--config-name", "config", *extras, *target, *overrides]


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0 if args else 2)
    sys.argv = [sys.argv[0], *rerun_argv(args[0], args[1:])]
    from stage2.main import main as stage2_main

    stage2_main()


if __name__ == "__main__":
    main()
