"""What a local directory can hold as objects, and what it cannot.

An S3 key is any string; a file needs a path below the directory. Keys that cannot be one
(`.`, `..`, empty segments, absolute, a trailing `/` with content) are reported, never
written somewhere else or emptied. A directory being mirrored may hold what is no file
either: links that dangle, lead out of it or to directories, sockets and pipes. Each is
reported and skipped; the rest is mirrored.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from blocks.errors import SlipwayError

TMP_PREFIX = ".slipway-tmp-"


def key_problem(key: str, size: int) -> str | None:
    """Why `key` cannot be a file (or, ending in `/` and empty, a directory) below a
    directory; None when it can."""
    body = key[:-1] if key.endswith("/") else key
    if key.endswith("/") and size:
        return f"ends in '/' but holds {size} bytes: no file can have that name"
    if key == "/":
        return None  # the folder marker of the top itself
    if "\0" in key:
        return "contains a NUL byte"
    if body.startswith("/"):
        return "starts with '/'"
    segments = body.split("/")
    if "" in segments:
        return "has an empty segment ('//')"
    if "." in segments or ".." in segments:
        return "has a '.' or '..' segment"
    if any(s.startswith(TMP_PREFIX) for s in segments):
        return f"uses Slipway's temporary-file prefix {TMP_PREFIX!r}"
    return None


def _entry(path: Path, root: Path, real_root: Path) -> os.stat_result | str | None:
    """A regular file's stat; why an entry is no file of the tree; None if it is gone."""
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            if not path.exists():  # also a loop of links
                return f"a dangling link (to {os.readlink(path)}): fix or remove it"
            target = path.resolve()
            if not target.is_relative_to(real_root):
                return f"a link leading out of {root} (to {target}): not followed"
            st = path.stat()
            if stat.S_ISDIR(st.st_mode):
                return "a link to a directory: not followed; mirror its target instead"
    except FileNotFoundError:
        return None  # removed since the directory was read: nothing to mirror
    except OSError as exc:
        return f"cannot be read ({exc.strerror}): fix its permissions"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a socket, pipe or device)"
    return st


def walk(root: Path) -> Iterator[tuple[str, os.stat_result | str]]:
    """Each entry below `root` as (key, stat) for a file, or (key, why) for what is none.

    A directory that cannot be read fails the whole listing: a partial one would make a
    mirror with --delete remove the copies of what it could not see.
    """

    def fail(exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError) and Path(str(exc.filename)) != root:
            return  # a directory removed since its parent was read: nothing in it to mirror
        raise SlipwayError(f"listing {root} failed: {exc}; nothing was deleted: fix it, run again")

    real_root = root.resolve()
    for dirpath, dirs, files in os.walk(root, onerror=fail):
        for name in dirs:  # os.walk lists a link to a directory here, and does not follow it
            path = Path(dirpath, name)
            if path.is_symlink():
                why = "a link to a directory: not followed; mirror its target instead"
                yield path.relative_to(root).as_posix(), why
        for name in files:
            if name.startswith(TMP_PREFIX):
                continue  # a copy under way, or left by one that was killed
            path = Path(dirpath, name)
            entry = _entry(path, root, real_root)
            if entry is not None:
                yield path.relative_to(root).as_posix(), entry
