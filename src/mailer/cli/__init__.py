"""The thin typer layer: parse options, make one core call, show the result.

This package is the only place that prints, prompts or exits. Core errors
(MailerError) are turned into one sentence on stderr and an exit code, here, once.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from .. import __version__
from ..clock import Clock, SystemClock, iso
from ..config import Workspace, open_workspace
from ..errors import ExitCode, MailerError, StoreError, Terminated
from ..home import open_list
from ..store import Store, translate_error
from .output import Output

CONTEXT = {"help_option_names": ["-h", "--help"]}


@dataclass
class AppState:
    """What every command may need; tests pass their own (with a FakeClock) as `obj`."""

    home: str | None = None
    debug: bool = False
    clock: Clock = field(default_factory=SystemClock)
    output: Output = field(default_factory=Output)
    environ: Mapping[str, str] | None = None
    open_browser: Callable[[str], bool] = webbrowser.open  # tests pass their own: no real browser
    _workspace: Workspace | None = None
    _stores: list[Store] = field(default_factory=list)
    _secret: bytes | None = None

    def workspace(self, must_exist: bool = True) -> Workspace:
        if self._workspace is None:
            self._workspace = open_workspace(self.home, self.env)
        if must_exist and not self._workspace.home.is_dir():
            raise StoreError(
                f"There is no mailer workspace at {self._workspace.home}.",
                hint="Run `mailer init` to create it, or choose another with --home or MAILER_HOME.",
            )
        return self._workspace

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    def store(self) -> Store:
        """The workspace's database, opened, migrated and checked against secret.key."""
        store, self._secret = open_list(self.workspace())
        self._stores.append(store)
        return store

    def secret(self) -> bytes:
        """secret.key, checked against mailer.db (see mailer.home)."""
        if self._secret is None:
            self.store()
        assert self._secret is not None
        return self._secret

    def now(self) -> str:
        return iso(self.clock.now())

    def close(self) -> None:
        while self._stores:
            self._stores.pop().close()


def state(ctx: typer.Context) -> AppState:
    return ctx.find_root().obj


def _is_cli_signal(exc: BaseException) -> bool:
    # typer.Exit / Abort and the usage errors of click (vendored or not) pass through.
    return isinstance(exc, (typer.Exit, typer.Abort)) or type(exc).__module__.split(".")[0] in ("click", "typer")


class _Argument(TyperArgument):
    """An argument shown as FILE, ADDRESS or ID: never a Python type or {braces}."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw.upper()
        return name if self.required else f"[{name}]"

    def _rich_display_name(self) -> str:
        return self.display_name_raw.upper()

    def display_type_rich(self, ctx: object) -> None:
        return None


def _placeholder(param: TyperOption) -> str:
    """What an option's value is called in help when its definition does not say."""
    desc = param.type_descriptor
    if desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    if desc.is_path:
        return "FILE"
    if desc.annotation in (int, float):
        return "N"
    long = max(param.opts, key=len).lstrip("-")  # --list -> LIST (the name people type, not list_name)
    return long.upper().replace("_", "-")


def _plain_placeholders(command: TyperGroup | TyperCommand) -> None:
    """Every argument and option of every command shows a word (FILE, TAG, N), not a type."""
    for param in command.params:
        if isinstance(param, TyperArgument) and not isinstance(param, _Argument):
            param.__class__ = _Argument
        elif isinstance(param, TyperOption) and param.metavar is None and not param.is_flag:
            param.metavar = _placeholder(param)
    for sub in getattr(command, "commands", {}).values():
        _plain_placeholders(sub)


class MailerGroup(TyperGroup):
    """The root command: turns every core error into a message and an exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_placeholders(self)

    # typer types this with the click Context it vendors and does not export; typer.Context is its public name.
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            _output(ctx).error(exc.message, exc.hint)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt as exc:
            _output(ctx).error("Interrupted: what had finished is kept, and nothing was left half-done.")
            raise typer.Exit(int(ExitCode.TERMINATED if isinstance(exc, Terminated) else ExitCode.INTERRUPTED)) from None
        except sqlite3.Error as exc:  # one the store did not meet inside a transaction
            if _debug(ctx):
                raise
            error = translate_error(exc)
            _output(ctx).error(error.message, error.hint)
            raise typer.Exit(int(error.exit_code)) from None
        except BrokenPipeError:
            # `mailer export | head`: the reader went away; that is not our failure.
            sys.stdout = open(os.devnull, "w")
            raise typer.Exit(0) from None
        except Exception as exc:
            if _is_cli_signal(exc) or _debug(ctx):
                raise
            _output(ctx).error(
                f"Unexpected {type(exc).__name__}: {exc}.",
                "This is a bug in mailer; run the command again with --debug and report what it prints.",
            )
            raise typer.Exit(int(ExitCode.INTERNAL)) from None
        finally:
            obj = ctx.obj
            if isinstance(obj, AppState):
                obj.close()


def _output(ctx: typer.Context) -> Output:
    obj = ctx.obj
    return obj.output if isinstance(obj, AppState) else Output()


def _debug(ctx: typer.Context) -> bool:
    obj = ctx.obj
    return bool(isinstance(obj, AppState) and obj.debug) or os.environ.get("MAILER_DEBUG") == "1"


app = typer.Typer(
    cls=MailerGroup,
    name="mailer",
    help="A newsletter and mailing-list manager for a small practice.",
    context_settings=CONTEXT,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailer {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Optional[str],
        typer.Option("--home", metavar="DIR", help="Workspace directory (default: $MAILER_HOME, else the user data dir)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """mailer: import subscribers, write specials and news, send them in safe batches."""
    if not isinstance(ctx.obj, AppState):
        ctx.obj = AppState()
    ctx.obj.home = home or ctx.obj.home
    ctx.obj.debug = debug or ctx.obj.debug


def sub_app(name: str, help: str) -> typer.Typer:
    """A noun's group of commands (`mailer subscribers ...`)."""
    t = typer.Typer(name=name, help=help, context_settings=CONTEXT, no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(t)
    return t


# Each module registers its commands on `app` when imported.
from . import campaign as _campaign  # noqa: E402,F401
from . import cron as _cron  # noqa: E402,F401
from . import inbox as _inbox  # noqa: E402,F401
from . import render as _render  # noqa: E402,F401
from . import send as _send  # noqa: E402,F401
from . import subscribers as _subscribers  # noqa: E402,F401
from . import workspace as _workspace  # noqa: E402,F401


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mailer")
