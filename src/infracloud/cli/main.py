"""The `infracloud` command: the groups and commands of the other modules, and `main`."""

from __future__ import annotations

import faulthandler
import signal
import sys
from typing import Annotated

import typer

from infracloud import __version__
from infracloud.cli.agent import agent
from infracloud.cli.backup import backup, restore
from infracloud.cli.common import fail
from infracloud.cli.config import config_app
from infracloud.cli.controller import controller
from infracloud.cli.db import db_app
from infracloud.cli.demo import demo
from infracloud.cli.events import events
from infracloud.cli.hardware import capacity, hardware_app
from infracloud.cli.keys import keys_app
from infracloud.cli.pool import pool_app
from infracloud.cli.report import report_app
from infracloud.cli.status import status
from infracloud.core.errors import InfracloudError

try:  # typer vendors its click (0.2x); older typers use click itself
    from typer._click import exceptions as usage
except ImportError:  # pragma: no cover
    from click import exceptions as usage  # type: ignore[no-redef]

app = typer.Typer(help="infracloud: donated bare metal as a private cloud of CI test nodes.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


app.command()(demo)
app.command()(controller)
app.command()(agent)


@app.command()
def states(
    kind: Annotated[str | None, typer.Argument(
        help="image, instance, host, node, pool-node or pool-request (default: all)")
                    ] = None,
    output: Annotated[str, typer.Option("--format", help="table or dot (Graphviz)")] = "table",
) -> None:
    """Print the state machines (states, transitions, timeouts) the code runs on."""
    from infracloud.core.states import MACHINES

    if kind is not None and kind not in MACHINES:
        fail(f"unknown kind {kind!r}; kinds: {', '.join(MACHINES)}")
    if output not in ("table", "dot"):
        fail(f"--format must be table or dot, not {output!r}")
    for machine in [MACHINES[kind]] if kind else list(MACHINES.values()):
        if output == "dot":
            typer.echo(machine.dot())
            continue
        typer.echo(f"{machine.kind}:")
        for st in machine.states.values():
            kind_of = "failure" if st.failure else ("stable" if st.stable else "in progress")
            limit = f", times out after {st.timeout:g} s" if st.timeout else ""
            typer.echo(f"  {st.name:15} {kind_of}{limit} - {st.description}")
        for source, event, target in machine.table():
            typer.echo(f"    {source:15} --{event}--> {target}")


app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(hardware_app, name="hardware")
app.add_typer(pool_app, name="pool")
app.command("capacity")(capacity)
app.command("events")(events)
app.add_typer(report_app, name="report")
app.command("status")(status)
app.command("backup")(backup)
app.command("restore")(restore)


def main() -> None:
    # `kill -USR1 PID` prints every thread's stack to stderr (the log): what a stuck
    # controller, pool or agent is doing, without stopping it
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        code = app(standalone_mode=False)
    except usage.NoArgsIsHelpError:  # `infracloud` alone: its help is already printed
        sys.exit(2)
    except usage.UsageError as exc:
        # a bad option value, a missing argument, an unknown command: one line, not a panel
        typer.echo(f"infracloud: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except InfracloudError as exc:
        typer.echo(f"infracloud: error: {exc.message}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    # without standalone mode a command's typer.Exit comes back as its code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
