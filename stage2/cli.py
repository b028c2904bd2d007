"""The `stage2` console script's entry point: light to import, because every pool worker imports it.

A spawned worker re-runs the script that started its driver (as `__mp_main__`, so `main()` is not
called), and a console script imports its entry point's module first thing. With the entry point in
stage2.main, each worker imported Hydra and OmegaConf for nothing: ~0.6 CPU s per worker per stage
on the 2-core development machine. Here, Hydra is imported only when the app really starts.
"""


def main() -> None:
    import gc
    import sys

    if "--version" in sys.argv[1:]:  # Hydra's own --version would print Hydra's version
        from importlib.metadata import version

        import stage2

        print(f"stage2 {stage2.__version__} (Hydra {version('hydra-core')}, Python {sys.version.split()[0]})")
        return
    # Start-up (imports, Hydra composing the config twice, the schema) makes about 100k objects, most of
    # which live on: the collector's repeated passes over them are wasted driver CPU, so it is off until
    # the run starts (`stage2.main.app` turns it on) or the command ends.
    gc.disable()
    try:
        from stage2.main import main as app

        app()
    finally:
        gc.enable()
