"""The README's map of the code ("Where each step lives") names every module of app/, so a new
module cannot go unmapped and a moved one cannot leave a stale path."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _rows() -> list[tuple[list[str], str]]:
    """The map's rows as (the paths in its Path column, the whole row's text)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where each step lives", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) >= 4 and "`app" in cells[2]:
            rows.append((re.findall(r"`([^`]+)`", cells[2]), line))
    return rows


def _mapped(module: Path, rows: list[tuple[list[str], str]]) -> bool:
    path = module.relative_to(ROOT).as_posix()
    if path == "app/__init__.py":
        return True
    folder = module.parent.relative_to(ROOT).as_posix() + "/"
    for paths, text in rows:
        # A package's __init__.py is mapped with its folder; any other module by its name too.
        named = module.name == "__init__.py" or f"`{module.name}`" in text
        if path in paths or (folder in paths and named):
            return True
    return False


def _modules() -> list[Path]:
    return sorted((ROOT / "app").rglob("*.py"))


def test_every_module_of_app_is_on_the_readme_map() -> None:
    rows = _rows()
    assert len(rows) > 10, "the README's map table was not found"
    unmapped = [m.relative_to(ROOT).as_posix() for m in _modules() if not _mapped(m, rows)]
    assert not unmapped, f"add these to README.md's 'Where each step lives': {unmapped}"


def test_every_path_on_the_map_exists() -> None:
    stale = [p for paths, _ in _rows() for p in paths if p.startswith("app") and not (ROOT / p).exists()]
    assert not stale, f"README.md's map names paths that are gone: {stale}"
