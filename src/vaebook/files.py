"""Writing files so that nothing is ever half-written, and saying clearly when a file cannot be written.

* `atomic_write` writes a file under a temporary name in the same folder and renames
  it into place: a reader (or the next run) sees the old file or the new one, never a
  mixture. The file gets the user's normal permissions (``0o666`` less the umask), so
  other users of a shared install can read it.
* A run killed in the middle of a write (``kill -9``, power loss) leaves its temporary
  file behind. Temporary files are named ``.NAME.PID-TOKEN.tmp``; the next write into
  the same folder removes those whose process is gone (`remove_stale_temporaries`).
* `check_writable` tries a folder before any work is done, so an output folder that
  cannot be created or written is reported at once, not after the first epoch.
* Every ``OSError`` on the way (a read-only folder, a path under ``/proc``, a full
  disk) becomes an `OutputError` with one line that names the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Callable

from .errors import CheckpointError, OutputError

_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


def sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def missing_dirs(path: str | os.PathLike) -> list[Path]:
    """The folders on the way to ``path`` (``path`` included) that do not exist yet, deepest first.

    Removing them in this order (each only if empty) undoes a ``mkdir(parents=True)``.
    """
    missing = []
    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove each folder of `missing_dirs` that is still empty, deepest first; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or a platform that cannot tell: keep its file
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes killed in ``folder`` left behind; returns what was deleted.

    Only files named by `atomic_write` (``.NAME.PID-TOKEN.tmp``) whose process no
    longer runs are touched, so a write in progress in another process is safe.
    """
    removed = []
    try:
        candidates = list(Path(folder).glob(".*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        match = _TEMPORARY.match(path.name)
        if match and not _process_alive(int(match["pid"])):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def check_writable(folder: str | os.PathLike, what: str = "the output folder") -> None:
    """Raise `OutputError` unless ``folder`` can be created (if missing) and written; leaves no trace.

    Folders it had to create for the test, and its test file, are removed again, so a
    check before the work starts changes nothing on disk.
    """
    folder = Path(folder)
    created = missing_dirs(folder)
    probe = folder / f".vaebook-write-test.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as e:
        raise OutputError(f"Cannot write to {folder} ({what}): {_reason(e)}. "
                          "Choose a folder you can create and write to.") from None
    finally:
        remove_empty(created)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename.

    Raises `OutputError` (one line: the file and the reason, e.g. "No space left on
    device") if the folder cannot be created or the file cannot be written; the old
    ``path``, if any, is then untouched.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        # os.open applies the umask to 0o666, as an ordinary open() does (mkstemp would give 0o600).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"Could not write {path}: {_reason(e)}.") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (never a half-written file)."""
    atomic_write(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or damaged one raises `CheckpointError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the file is damaged.") from None
