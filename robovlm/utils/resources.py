"""Where the package's shipped files are: model configs, instructions, the demo checkpoint, the parameter YAML.

One lookup for every CLI. The same relative path (``models/configs/demo.json``, ``config/robovlm.yaml``) is looked
for, in order:
1. the source tree this module was imported from (a git checkout, ``pip install -e``, ``colcon --symlink-install``);
2. ``share/robovlm`` of every prefix on ``AMENT_PREFIX_PATH`` (a sourced colcon or ROS 2 install);
3. ``share/robovlm`` of the prefix this module is installed under (``colcon build``, ``pip install``, Docker).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import UserError

PACKAGE = "robovlm"


class ResourceNotFound(UserError, FileNotFoundError):
    """A shipped file is in none of the places the package is installed to; the message lists them."""


def _install_prefix() -> Path | None:
    """``<prefix>`` for ``<prefix>/lib/pythonX.Y/site-packages/robovlm/utils/resources.py``."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if parent.name == "lib" and parent.parent != parent:
            return parent.parent
    return None


def search_roots() -> list[Path]:
    """Directories that may hold the package's files, in lookup order (existing ones only, no duplicates)."""
    candidates = [Path(__file__).resolve().parents[2]]  # the source tree: robovlm/ sits beside models/, config/
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / PACKAGE)
    install = _install_prefix()
    if install is not None:
        candidates.append(install / "share" / PACKAGE)
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)
    roots: list[Path] = []
    for c in candidates:
        if c.is_dir() and (c / "package.xml").is_file() and c not in roots:
            roots.append(c)
    return roots


def find_resource(*parts: str) -> Path:
    """The first existing ``<root>/<parts...>`` over ``search_roots()``; ``ResourceNotFound`` names every root."""
    rel = Path(*parts)
    roots = search_roots()
    for root in roots:
        if (root / rel).exists():
            return root / rel
    where = (
        ", ".join(str(r) for r in roots) or "no package root found (no package.xml beside robovlm/, no share/robovlm)"
    )
    raise ResourceNotFound(
        f"{rel} is not installed: looked in {where}. Reinstall the package (make install or "
        "colcon build) or pass the path explicitly"
    )
