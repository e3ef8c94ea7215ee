"""`infracloud backup` and `infracloud restore`: a site's controller state (database, key
files, config) in one archive, taken while the controller runs; and the site rebuilt from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infracloud.cli.common import fail, load_config

ConfigFile = Annotated[Path, typer.Option("--config", help="controller YAML")]
PassphraseFile = Annotated[Path | None, typer.Option(
    "--passphrase-file", help="file whose first line is the passphrase that encrypts the key "
                              "files (default $INFRACLOUD_BACKUP_PASSPHRASE)")]


def backup(
    config_file: ConfigFile,
    output: Annotated[Path, typer.Option("--output", help="the archive to write (a tar file)")],
    passphrase_file: PassphraseFile = None,
) -> None:
    """Back up a site while its controller runs: the database (SQLite's online backup, or
    pg_dump), the secret key file (encrypted with the passphrase) and the config, in one file."""
    from infracloud.store.backup import BackupError, read_passphrase
    from infracloud.store.backup import backup as take

    try:
        passphrase = read_passphrase(passphrase_file)
        config = load_config(config_file)
        manifest = take(config, config_file, output, passphrase, say=typer.echo)
    except BackupError as exc:
        fail(exc.message)
        return
    typer.echo(f"backed up site {manifest['site']} ({manifest['database']}, schema revision "
               f"{manifest['revision']}) to {output} ({output.stat().st_size} bytes)")


def restore(
    archive: Annotated[Path, typer.Argument(help="the archive `infracloud backup` wrote")],
    config_file: ConfigFile,
    passphrase_file: PassphraseFile = None,
    force: Annotated[bool, typer.Option(
        "--force", help="restore over a database that is not empty and key files that differ")
                     ] = False,
) -> None:
    """Rebuild a controller's state from a backup: the database and the key files the config
    names. Start the controller on that config afterwards."""
    from infracloud.store.backup import BackupError, read_passphrase
    from infracloud.store.backup import restore as put_back

    try:
        passphrase = read_passphrase(passphrase_file)
        config = load_config(config_file)
        put_back(config, archive, passphrase, force=force, say=typer.echo)
    except BackupError as exc:
        fail(exc.message)
        return
    typer.echo(f"restored {archive}: start the controller with --config {config_file}")
