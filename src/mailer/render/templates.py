"""Where templates come from: the packaged defaults, overridden file by file by a workspace's templates/."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from ..errors import TemplateError

TEMPLATE_FILES = (
    "base.html.j2", "base.txt.j2", "specials.html.j2", "specials.txt.j2", "news.html.j2", "news.txt.j2",
)


def packaged_templates_dir() -> Path:
    """Where the default templates are: mailer/templates in a wheel, else the repository's templates/."""
    try:
        packaged = Path(str(importlib.resources.files("mailer") / "templates"))
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual importers
        pass
    # An editable install: src/mailer/render/templates.py -> <repo>/templates
    return Path(__file__).resolve().parents[3] / "templates"


def _workspace_templates_dir(workspace: Any) -> Path:
    directory = getattr(workspace, "templates_dir", None)
    return Path(directory) if directory is not None else Path(workspace) / "templates"


def _template_files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        return {}
    return {p.name: p for p in sorted(directory.iterdir()) if p.name.endswith(".j2") and p.is_file()}


def templates_in_use(workspace: Any) -> list[tuple[str, str, Path]]:
    """Every template and where it comes from: (name, "packaged" | "workspace", path), by name."""
    files = {name: ("packaged", path) for name, path in _template_files(packaged_templates_dir()).items()}
    files.update({name: ("workspace", path) for name, path in _template_files(_workspace_templates_dir(workspace)).items()})
    return [(name, origin, path) for name, (origin, path) in sorted(files.items())]


def resolve_templates(workspace: Any) -> dict[str, str]:
    """The template sources in use, by file name; a file in the workspace's templates/ wins."""
    sources = {}
    for name, origin, path in templates_in_use(workspace):
        if origin == "workspace" and path.is_symlink():
            # A link could pull any file of this machine (a key, /etc/passwd) into every message.
            raise TemplateError(
                f"{path} is a symbolic link; templates/ holds real files only.",
                hint=f"Copy the file there instead (`mailer templates copy {name.split('.')[0]}` starts from ours).",
            )
        try:
            sources[name] = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise TemplateError(f"{path}:1: the template is not UTF-8 text; save it as UTF-8.") from None
        except OSError as exc:
            raise TemplateError(f"Cannot read the template {path}: {exc.strerror}.") from None
    missing = [n for n in TEMPLATE_FILES if n not in sources]
    if missing:
        raise TemplateError(
            f"The template {missing[0]} is missing (looked in {_workspace_templates_dir(workspace)} "
            f"and {packaged_templates_dir()}).",
            hint="Reinstall mailer, or copy the packaged template into the workspace's templates/.",
        )
    return sources
