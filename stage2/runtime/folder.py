"""Who may write a run folder: one process at a time (a lock), and only once the run owns it.

The lock is `fcntl.flock` on `<run>/.stage2.lock`, which holds the owner's pid. The kernel releases
it when its process ends, however it ends, so the lock of a killed run is free again at once (its
file, with the dead pid, is simply taken over). A folder is *owned* once `start_run` has passed every
start-up check and is about to write; until then stage2 changes nothing in it, and whatever this
process (Hydra, its log file) added to it is removed again when the process gives up (`abandon`).
A folder is stage2's to use only when it is new, empty, or holds a stage2 run (`check_usable`): a
user's folder is refused before anything is written into it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

import yaml

from stage2.errors import Stage2Error
from stage2.io.files import atomic_write, is_temporary

log = logging.getLogger(__name__)

LOCK_FILE = ".stage2.lock"


@dataclass
class _Watch:
    """What the folder held before this process touched it (None: it did not exist)."""

    entries: Optional[Set[str]]
    created_parents: List[Path] = field(default_factory=list)  # ancestors this process creates, deepest first


@dataclass
class _Lock:
    fd: int
    existed: bool  # the lock file was there before (a killed run's): put it back as it was when abandoning
    previous: bytes
    dead_holder: Optional[str] = None  # the pid in it, of a process that had ended (said once the run owns the folder)


_locks: Dict[Path, _Lock] = {}  # folder -> its lock, held by this process
_watched: Dict[Path, _Watch] = {}
_owned: Set[Path] = set()
_on_claim: Dict[Path, List[Callable[[], None]]] = {}
_foreign: Set[Path] = set()  # folders refused as not stage2's: nothing may be written into them
_failed: List[Path] = []  # the sweep jobs of this process that failed (a refused job may write no stats.json)
_records: Dict[Path, Dict[str, bytes]] = {}  # record files saved before Hydra rewrote them (a sweep's resume)

# What a stage2 start leaves in its folder before its first stats.json (Hydra's record, the log, the
# lock, the recipe and provenance) when it is killed there: such a folder holds no run yet, and a new
# start may use it. With stats.json (and stage2's provenance.json) it holds a run.
START_FILES = {".hydra", "stage2.log", LOCK_FILE, "config.resolved.yaml", "provenance.json"}


def _key(run_dir: Path) -> Path:
    return Path(os.path.abspath(run_dir))


def _entries(folder: Path) -> Set[str]:
    """Top-level names and those of `.hydra/`: the places Hydra and the log write to."""
    names = {p.name for p in folder.iterdir()}
    hydra = folder / ".hydra"
    if hydra.is_dir():
        names |= {f".hydra/{p.name}" for p in hydra.iterdir()}
    return names


def check_usable(run_dir: Path, what: str = "hydra.run.dir") -> None:
    """Refuse a folder that is not stage2's to write: a file, or a folder holding anything but a stage2
    run (or what a killed stage2 start left). Nothing in it is touched."""
    key = _key(run_dir)
    for path in (key, *key.parents):  # the folder, or the first of its parents that exists
        if path.is_dir():
            break
        if os.path.lexists(path):
            kind = "a link to nothing" if path.is_symlink() else "a file, not a folder"
            raise Stage2Error(f"{path} is {kind}: choose a folder for {what}")
    if not key.is_dir():
        return
    watched = _watched.get(key)
    names = set(watched.entries) if watched is not None and watched.entries is not None else {p.name for p in key.iterdir()}
    names = {n for n in names if "/" not in n and not is_temporary(n)}
    if "stats.json" in names and _stage2_file(key / "provenance.json"):
        return  # a run (finished, failed, killed): whether it may be continued is `check_resumable`'s to say
    strange = sorted(n for n in names if n not in START_FILES)
    if not strange and all(_stage2_file(key / n) for n in names):
        return
    _foreign.add(key)
    shown = ", ".join(strange[:3] or sorted(names)[:3]) + (f" and {len(strange) - 3} more" if len(strange) > 3 else "")
    raise Stage2Error(
        f"{key} is not empty and holds no stage2 run ({shown}); nothing in it was changed: choose an empty or new folder"
        f" for {what}"
    )


def _stage2_file(path: Path) -> bool:
    """Whether one of the names a stage2 start writes is really stage2's (another program may use them)."""
    try:
        if path.name == "provenance.json":
            return "stage2_version" in json.loads(path.read_text(encoding="utf-8"))
        if path.name == ".hydra":
            saved = path / "hydra.yaml"
            # (written by Hydra after config.yaml: a start killed in between has none yet)
            return not saved.exists() or yaml.safe_load(saved.read_text(encoding="utf-8"))["hydra"]["job"]["name"] == "stage2"
        if path.name == "config.resolved.yaml":
            return "launch_dir" in yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return False
    return True


def save_records(where: Path, names: List[str]) -> None:
    """Keep the bytes of a folder's record files (`.hydra/*.yaml`, `multirun.yaml`): a resumed sweep's jobs
    are composed and recorded by Hydra before stage2 can check them, and a job's folder must keep the
    record of the run in it, refused or resumed, as a single run's does (`restore_records`)."""
    key = _key(where)
    saved = {}
    for name in names:
        try:
            saved[name] = (key / name).read_bytes()
        except OSError:
            continue
    if saved:
        _records[key] = saved


def restore_records(where: Path) -> bool:
    """Put back what `save_records` kept of this folder; whether it kept anything."""
    key = _key(where)
    saved = _records.pop(key, None)
    for name, data in (saved or {}).items():
        atomic_write(key / name, data)
    return saved is not None


def note_failed(run_dir: Path) -> None:
    _failed.append(_key(run_dir))


def failed_jobs() -> List[Path]:
    """The folders of this process's sweep jobs that failed, in the order they failed."""
    return list(_failed)


def foreign(run_dir: Path) -> bool:
    """A folder `check_usable` refused: not stage2's, nothing may be written into it."""
    return _key(run_dir) in _foreign


def watch(run_dir: Path) -> None:
    """Note the folder's contents before anything writes into it (so `abandon` can undo our part)."""
    key = _key(run_dir)
    if key in _watched:
        return
    if key.is_dir():
        _watched[key] = _Watch(_entries(key))
        return
    parents = []
    for parent in key.parents:
        if parent.exists():
            break
        parents.append(parent)
    _watched[key] = _Watch(None, parents)


def lock(run_dir: Path) -> None:
    """Take the folder's lock for this process, or refuse in one line when another process holds it."""
    key = _key(run_dir)
    if key in _locks:
        return
    check_usable(key)
    path = key / LOCK_FILE
    while True:
        try:
            key.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only or full filesystem, a folder of another user
            raise Stage2Error(f"{path}: cannot create the run folder's lock file: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise Stage2Error(f"{path}: cannot lock the run folder: {exc.strerror}") from None
            raise Stage2Error(
                f"{key}: another stage2 process (pid {holder}) is running in this folder; wait for it to end"
                " (a killed process frees it at once), or choose another hydra.run.dir"
            ) from None
        # The owner before us may have removed the file between our open and flock: lock the one that is there.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    previous = os.read(fd, 4096)
    _write(fd, f"{os.getpid()}\n".encode())
    holder = previous.decode("ascii", "replace").strip()
    _locks[key] = _Lock(fd, existed, previous, holder if holder and holder != str(os.getpid()) else None)


def _write(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def on_claim(run_dir: Path, callback: Callable[[], None]) -> None:
    """Run `callback` when the run claims the folder (at once if it has)."""
    key = _key(run_dir)
    if key in _owned:
        callback()
    else:
        _on_claim.setdefault(key, []).append(callback)


def claim(run_dir: Path) -> None:
    """The run owns the folder from now on: it may write, and a failure is recorded in it."""
    key = _key(run_dir)
    lock(key)
    if key in _owned:
        return
    _owned.add(key)
    for callback in _on_claim.pop(key, []):
        callback()
    held = _locks[key]
    if held.dead_holder:  # (now, so that the run's log has it)
        log.warning("%s: took over the lock of process %s, which is no longer running", key, held.dead_holder)


def owns(run_dir: Path) -> bool:
    return _key(run_dir) in _owned


def release(run_dir: Path, done: bool = False) -> None:
    """Give the lock up; its file goes (a finished run folder holds no lock file). `done`: this process's
    run in the folder is over (a sweep's job): a later job there does not own it."""
    key = _key(run_dir)
    if done:
        _owned.discard(key)
    held = _locks.pop(key, None)  # (the folder stays this process's run: `abandon` leaves it alone)
    if held is None:
        return
    try:
        os.unlink(key / LOCK_FILE)  # while still locked: a process that opened it meanwhile retries on a new one
    except OSError:
        pass
    os.close(held.fd)


def _close(key: Path) -> None:
    held = _locks.pop(key, None)
    if held is not None:
        os.close(held.fd)


def abandon(run_dir: Path) -> None:
    """A run that never owned its folder: take back what this process added to it, and its lock."""
    key = _key(run_dir)
    watched = _watched.pop(key, None)
    if key in _owned or watched is None:
        release(key)
        return
    held = _locks.get(key)
    if held is None and _used_by_another(key, watched):
        return  # (a read-only stage holds no lock) another process's run began here meanwhile: its files stay
    if held is not None and held.existed:  # a killed run's lock file: as it was, and unlocked
        _write(held.fd, held.previous)
        _close(key)
    if watched.entries is None:
        if key.is_dir():  # (not a file named as the folder: that is the user's)
            shutil.rmtree(key, ignore_errors=True)  # the lock file with it, while still held
        _close(key)
        for parent in watched.created_parents:  # e.g. outputs/<date>/, made for this folder alone
            try:
                parent.rmdir()
            except OSError:
                break  # not empty: another run's folder is in it
        return
    if key.is_dir():
        for name in sorted(_entries(key) - watched.entries - {LOCK_FILE}, reverse=True):
            path = key / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    release(key)


def _used_by_another(key: Path, watched: _Watch) -> bool:
    """Whether another process holds the folder's lock, or a run's stats.json appeared since `watch`."""
    if (key / "stats.json").exists() and "stats.json" not in (watched.entries or set()):
        return True
    try:
        fd = os.open(key / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (released by the close below)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def discard(run_dir: Path) -> bool:
    """Take away a folder this process's run made (it was new, or empty) and that holds nothing worth
    keeping; True if it did. A folder that held something before (a resumed run) is kept."""
    key = _key(run_dir)
    watched = _watched.get(key)
    if watched is None or watched.entries:
        return False
    _owned.discard(key)
    abandon(key)  # as for a refused start: a new folder goes, an empty one is emptied
    return True


def keep(run_dir: Path) -> None:
    """The folder stays whatever happens next (a sweep's folder once a job runs in it)."""
    _watched.pop(_key(run_dir), None)


def abandon_all() -> None:
    """At exit after an error or interrupt outside any run: undo this process's part in every folder."""
    for key in list(_watched):
        abandon(key)
    for key in list(_locks):
        release(key)
