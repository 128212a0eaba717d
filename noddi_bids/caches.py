"""Cache folders that stay usable in read-only installations (container images).

The container image carries warm caches in folders named by environment variables: numba's
compiled kernels (``NUMBA_CACHE_DIR``) and Matplotlib's font list (``MPLCONFIGDIR``). Apptainer
runs images read-only, and then numba refuses to load cached functions from a folder it cannot
write ("cannot cache function ... no locator available"), and Matplotlib builds a new font list
in a new temporary folder in every process. :func:`writable_cache` therefore points such a
variable at ``$TMPDIR/noddi-bids-<name>-<uid>`` when its folder is not writable, after copying
the folder's files there: the warm cache is used as it is, and what is new (kernels compiled
for another CPU) is written to the copy, which later runs on the same machine reuse.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from noddi_bids.atomic import atomic_target

LOGGER = logging.getLogger(__name__)


def fallback_folder(name: str) -> Path:
    """Per-user folder for the cache `name` under the temporary folder (``$TMPDIR``)."""
    return Path(tempfile.gettempdir()) / f"noddi-bids-{name}-{os.getuid()}"


def writable_cache(variable: str, name: str, default: Path | None = None) -> Path | None:
    """Make the environment variable `variable` name a writable cache folder.

    Parameters
    ----------
    variable : str
        Environment variable naming the cache folder, e.g. ``"NUMBA_CACHE_DIR"``.
    name : str
        Short name of the cache in the fallback folder's name, e.g. ``"numba"``.
    default : Path, optional
        Folder the library uses when `variable` is unset; its writability is checked too,
        but it is not copied.

    Returns
    -------
    Path or None
        The folder now in use: the configured (or default) one when it is writable (created if
        missing), else :func:`fallback_folder`, seeded with the configured folder's files and
        set as `variable`. None when `variable` is unset and there is no default.
    """
    configured = os.environ.get(variable)
    folder = Path(configured) if configured else default
    if folder is None or _writable(folder):
        return folder
    fallback = fallback_folder(name)
    fallback.mkdir(parents=True, exist_ok=True)
    if configured:
        _copy_missing(folder, fallback)
    LOGGER.debug("%s is not writable; using %s instead", folder, fallback)
    os.environ[variable] = str(fallback)
    return fallback


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _copy_missing(source: Path, target: Path) -> None:
    """Copy every file of `source` that `target` lacks; each appears whole or not at all.

    Files already in `target` are kept: they are the same, or newer entries written there.
    A file that cannot be copied is skipped (the cache then recomputes it).
    """
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if not path.is_file() or destination.exists():
            continue
        try:
            with atomic_target(destination) as temporary:
                shutil.copy2(path, temporary)
        except OSError as err:
            LOGGER.debug("Could not copy %s to %s: %s", path, destination, err)
