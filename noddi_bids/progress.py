"""Progress bars (tqdm): shown on a terminal unless asked otherwise."""

from __future__ import annotations


def no_bar(progress: bool | None) -> bool | None:
    """Return tqdm's ``disable`` for a ``progress`` option.

    Parameters
    ----------
    progress : bool or None
        Show the bar (True), hide it (False), or let tqdm decide (None: shown only when
        attached to a terminal).

    Returns
    -------
    bool or None
    """
    return None if progress is None else not progress
