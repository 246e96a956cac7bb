"""Small helpers every writer shares: tagged temporary names, fsync, umask, stale-temp cleanup.

Why tagged names: a temporary file or folder is called ``.<name>.<pid>-<host>.<random>.tmp``
(``host``: 12 hex digits of what makes a pid meaningful: the host name, the kernel's boot id and
the pid namespace), so the next run can tell the leftovers of a killed process (same host, its
pid no longer runs) from the live temporaries of a concurrent run (never touched), and clean
only the former. Temporaries of other hosts (a shared network folder written by several nodes,
where their pids mean nothing here) are removed only when a day old. The host name alone was
not enough: nodes or containers started with the same host name (and 6 hex digits of it, once
a cluster has hundreds of nodes) looked like this host, and a node could remove another's live
staging folder because that pid did not run here. Names of older versions (6 digits) are
still recognised, as another host's.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
from pathlib import Path

TEMP_SUFFIX = ".tmp"
FOREIGN_AGE_S = 86400.0
_TEMP_RE = re.compile(r"^\..+\.(\d+)-([0-9a-f]{12}|[0-9a-f]{6})\.[A-Za-z0-9_]+\.tmp$")


def _machine_identity() -> str:
    """Where this process's pids mean something: host name, kernel boot, pid namespace."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        pass
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "\n".join(parts)


def _host_tag() -> str:
    return hashlib.sha1(_machine_identity().encode()).hexdigest()[:12]


def temp_prefix(name: str) -> str:
    """Prefix for ``tempfile.mkstemp``/``mkdtemp`` that records the writing process."""
    return f".{name}.{os.getpid()}-{_host_tag()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else (EPERM), or unknown: keep it
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove temporaries left in ``folder`` by processes that no longer run; returns them.

    Never raises: cleaning is a courtesy, a folder we cannot list is left as it is.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return removed
    host = _host_tag()
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m:
            continue
        path = Path(entry.path)
        try:
            if m.group(2) == host:
                if _pid_alive(int(m.group(1))):
                    continue
            elif time.time() - entry.stat(follow_symlinks=False).st_mtime < FOREIGN_AGE_S:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file (or a folder's entries) to the device, so a rename publishes real data."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # e.g. folders cannot be opened on some platforms
    try:
        os.fsync(fd)
    except OSError as exc:
        if os.path.isfile(path):  # a file that cannot be flushed was not written
            raise exc
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask without changing it (read from /proc when available)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_like_new_file(path: str | os.PathLike) -> None:
    """Give a ``mkstemp`` file (mode 0600) the mode ``open()`` would have: 0666 & ~umask."""
    os.chmod(path, 0o666 & ~current_umask())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file (reports, tables) so it is replaced whole or not at all.

    Raises OSError like ``Path.write_text``; the temporary is removed on any failure.
    """
    import tempfile

    path = Path(path)
    data = text.encode("utf-8")
    clean_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX,
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if os.path.getsize(tmp) != len(data):
            raise OSError(28, f"only {os.path.getsize(tmp)} of {len(data)} bytes written")
        chmod_like_new_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
