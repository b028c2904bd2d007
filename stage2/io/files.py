"""Files written whole or not at all, and their hashes (light imports: workers use it too)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List

from stage2.errors import Stage2Error, SystemRefused, first_line


def _read_into(path: Path, *digests: Any) -> int:
    """Feed the file's bytes to every digest in one read; returns its size."""
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            for digest in digests:
                digest.update(block)
            size += len(block)
    return size


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _read_into(path, digest)
    return digest.hexdigest()


def file_fingerprint(path: Path) -> List[Any]:
    """[bytes, xxh3-128] of a scratch file, recorded by the marker that vouches for it (cheap: xxh3
    reads at memory speed, so a resume can check every file it reuses)."""
    import xxhash

    digest = xxhash.xxh3_128()
    return [_read_into(path, digest), digest.hexdigest()]


def file_digests(path: Path) -> Dict[str, Any]:
    """`file_sha256` and `file_fingerprint` in one read: a task hands them with a file it wrote, so the
    driver never reads the file again (at scale, every part's bytes in one process)."""
    import xxhash

    sha, fast = hashlib.sha256(), xxhash.xxh3_128()
    size = _read_into(path, sha, fast)
    return {"sha256": sha.hexdigest(), "fingerprint": [size, fast.hexdigest()]}


class HashingFile:
    """A file written once, front to back, hashed from the bytes on their way out (no second read)."""

    def __init__(self, f: BinaryIO, digest: Any):
        self.f, self.digest, self.size = f, digest, 0

    def write(self, data: Any) -> int:
        self.f.write(data)
        self.digest.update(data)
        n = memoryview(data).nbytes
        self.size += n
        return n


class FingerprintingFile(HashingFile):
    """A HashingFile whose hash is `file_fingerprint`'s (xxh3_128 and the size)."""

    def __init__(self, f: BinaryIO):
        import xxhash

        super().__init__(f, xxhash.xxh3_128())

    def fingerprint(self) -> List[Any]:
        return [self.size, self.digest.hexdigest()]


def unchanged(path: Path, fingerprint: List[Any]) -> bool:
    """Whether `path` still has the bytes `file_fingerprint` recorded (the size first: no read when it differs)."""
    try:
        if os.path.getsize(path) != fingerprint[0]:
            return False
        return file_fingerprint(path) == list(fingerprint)
    except OSError:
        return False


def write_array(f: BinaryIO, array: Any, npy_header: bool = False) -> None:
    """An array's bytes (after an `.npy` header, byte for byte `np.save`'s) through Python's own file
    write: numpy's writes lose the OS error (a full disk reads "N requested and M written")."""
    import numpy as np

    array = np.ascontiguousarray(array)
    if npy_header:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
    f.write(memoryview(array.reshape(-1)).cast("B"))


def is_temporary(name: str) -> bool:
    """Whether a file name is one `atomic_path` gives its temporary files."""
    return re.fullmatch(r"\..+\.tmp-\d+", name) is not None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    replaced = False
    try:
        yield tmp
        os.replace(tmp, path)
        replaced = True
    except OSError as exc:  # a full disk, a read-only folder: name the file, keep the message one line
        raise SystemRefused(f"{path}: cannot write it: {exc.strerror or exc}") from exc
    finally:
        if not replaced and tmp.exists():
            tmp.unlink()


def share_file(source: Path, path: Path) -> None:
    """`path` becomes a file with `source`'s bytes, atomically: a hard link (no copy) where the file
    system has them, else a copy. `source` stays (a task that is redone still finds it)."""
    import shutil

    with atomic_path(path) as tmp:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (another device, FAT, some network file systems)
            shutil.copyfile(source, tmp)


def atomic_write(path: Path, data: bytes | str, durable: bool = True) -> None:
    """Write `path` whole or not at all. `durable`: on disk before it is renamed into place (fsync),
    for the run's records; a stage's scratch files need only survive a killed process (the page
    cache keeps them), and an fsync per task costs more than the task on small partitions."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())


def read_json(path: Path) -> Any:
    """A JSON file stage2 wrote (stats, provenance, manifests, indexes); a damaged one is a one-line error."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise Stage2Error(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: cut short or overwritten
        raise Stage2Error(f"{path}: not valid JSON ({first_line(exc)}): the file is damaged") from None


def write_json(path: Path, obj: Any, durable: bool = True) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n", durable)
