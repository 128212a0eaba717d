"""Print exact pins of noddi-bids' whole run-time dependency closure, as installed here.

Run in an environment where noddi-bids and its dependencies are installed and tested together:

    python workflows/docker/freeze_constraints.py > workflows/docker/constraints.txt

Local version labels (``torch==2.13.0+cpu``) are dropped so that the pin matches the CPU wheel
index and PyPI alike.
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "noddi-bids"
HERE = "workflows/docker"


def closure(root: str = ROOT) -> dict[str, str]:
    """Return {distribution: version} of every requirement of ``root``, recursively."""
    pins: dict[str, str] = {}
    stack = [root]
    while stack:
        name = canonicalize_name(stack.pop())
        if name in pins:
            continue
        dist = metadata.distribution(name)
        pins[name] = dist.version.split("+")[0]
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            stack.append(requirement.name)
    pins.pop(canonicalize_name(root))
    return pins


def main() -> None:
    """Print the constraints file."""
    python = ".".join(map(str, sys.version_info[:2]))
    print("# Exact versions of every run-time dependency of noddi-bids (its whole closure),")
    print(f"# installed together and tested with Python {python} on {platform.machine()} Linux.")
    print("# The Dockerfile installs torch from the CPU wheel index first, then these from PyPI.")
    print(f"# Regenerate: python {HERE}/freeze_constraints.py > {HERE}/constraints.txt")
    for name, version in sorted(closure().items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
