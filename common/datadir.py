"""Where models, videos and other large assets are found.

Assets are never shipped in the repository.  A relative asset path such as
``models/yolov8n-coco-320.onnx`` is looked up, in order, in:

1. the directory given explicitly (``--data-dir`` / config ``data_dir``),
2. ``$V2X_DATA_DIR`` (a colon-separated list is allowed),
3. ``../shared`` next to the project checkout, and ``./shared`` / ``../shared`` of the
   working directory (the layout of development machines and CI),
4. the user cache ``$XDG_CACHE_HOME/v2x-citybrain`` (default ``~/.cache/v2x-citybrain``).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "V2X_DATA_DIR"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class AssetNotFoundError(FileNotFoundError):
    """An asset is in none of the data directories; the message lists where we looked."""


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "v2x-citybrain"


def search_dirs(explicit: str | Path | None = None) -> list[Path]:
    dirs: list[Path] = []
    if explicit:
        dirs.append(Path(explicit).expanduser())
    for item in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if item:
            dirs.append(Path(item).expanduser())
    cwd = Path.cwd()
    dirs += [
        _PROJECT_ROOT.parent / "shared",
        cwd / "shared",
        cwd.parent / "shared",
        user_cache_dir(),
    ]
    unique: list[Path] = []
    for d in dirs:
        resolved = d.resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def resolve_asset(name: str | Path, explicit_dir: str | Path | None = None) -> Path:
    """The existing file for ``name``; absolute or existing relative paths are used as given."""
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists():
        if path.exists():
            return path.resolve()
        raise AssetNotFoundError(f"asset file not found: {path}")
    tried = search_dirs(explicit_dir)
    for directory in tried:
        candidate = directory / path
        if candidate.exists():
            return candidate
    where = "\n  ".join(str(d) for d in tried)
    raise AssetNotFoundError(
        f"asset {str(path)!r} not found in any data directory:\n  {where}\n"
        f"Set {ENV_VAR} or --data-dir to the folder holding it (see README.md, 'Data')."
    )
