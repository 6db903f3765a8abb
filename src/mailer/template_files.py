"""Your own templates: a packaged template copied into the workspace's templates/ to edit.

A file in templates/ wins over the packaged one of the same name (`mailer templates list`
says which is in use); copying never replaces a file already there.
"""

from __future__ import annotations

from pathlib import Path

from .config import Workspace
from .errors import InputError
from .files import write_atomic
from .render import packaged_templates_dir


def packaged_templates() -> dict[str, Path]:
    """The packaged template files by file name (base.html.j2, news.txt.j2, ...)."""
    folder = packaged_templates_dir()
    return {p.name: p for p in sorted(folder.iterdir()) if p.name.endswith(".j2") and p.is_file()}


def template_names() -> list[str]:
    """The templates one can copy, by the name people use: base, news, specials."""
    return sorted({name.split(".", 1)[0] for name in packaged_templates()})


def copy_template(ws: Workspace, name: str) -> list[Path]:
    """Copy a packaged template (`news`: news.html.j2 and news.txt.j2; or one file by its full
    name) into the workspace's templates/; returns the files written.

    InputError, and nothing copied, for an unknown name or when a file is already there.
    """
    files = packaged_templates()
    chosen = [n for n in files if n == name or n.split(".", 1)[0] == name]
    if not chosen:
        raise InputError(
            f"There is no packaged template called {name!r}.",
            hint=f"Choose one of {', '.join(template_names())} (or a file name from `mailer templates list`).",
        )
    targets = [(files[n], ws.templates_dir / n) for n in chosen]
    there = [t for _, t in targets if t.exists()]
    if there:
        raise InputError(
            f"{there[0]} already exists, so nothing was copied (your own version is never replaced).",
            hint="Edit it, or move it away first to start again from the packaged one.",
        )
    ws.templates_dir.mkdir(parents=True, exist_ok=True)
    for source, target in targets:
        write_atomic(target, source.read_bytes(), exclusive=True)
    return [t for _, t in targets]
