"""Atomic writes: a file or folder appears complete under its name, or not at all.

Everything noddi-bids writes (derivatives, reports, DICOM series, networks) goes through
:func:`atomic_target`: it is written to a temporary name in its destination folder and moved
into place (:func:`os.replace`), so a crash never leaves a half-written output and a reader, or
a concurrent writer of the same file, never sees one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The block writes a file, or makes a folder, at the temporary path, which keeps the name's
    extension (NIfTI writers need it) and is unique to the process and thread. A folder
    replaces an older folder at ``path`` as a whole. On failure the temporary is removed and
    ``path`` is left as it was; parent folders are created.

    Parameters
    ----------
    path : path-like
        Final name of the file or folder.

    Yields
    ------
    Path
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        yield temporary
        if temporary.is_dir():
            _replace_folder(temporary, path)
        else:
            os.replace(temporary, path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


def _replace_folder(finished: Path, target: Path) -> None:
    """Move the ``finished`` folder to ``target``, replacing an older one."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{os.getpid()}-{threading.get_ident()}-{target.name}")
        target.rename(old)
    finished.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
