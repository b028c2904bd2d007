"""How work runs and is kept: executors (local pool, Ray) behind one interface, task markers, the run
folder and its lock, provenance and the run record, progress, and Hydra's callbacks."""
