"""`flask oblako ...` commands: roles, demo data, the outbox, reminders, the worker."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from app.db import unit_of_work

oblako_cli = AppGroup("oblako", help="Oblako administration commands.")


@oblako_cli.command("init")
def init_command() -> None:
    """Create the roles and the reference catalogue (idempotent; run after `flask db upgrade`).

    A fresh deployment needs the document types before any patient can upload; the catalogue
    only adds what is missing, so managers' edits survive every release.
    """
    from app.catalogue import load_catalogue
    from app.demo import ensure_roles

    with unit_of_work():
        ensure_roles()
        load_catalogue()
    click.echo("roles and catalogue ready")


@oblako_cli.command("demo-data")
def demo_data_command() -> None:
    """Load the demo centres, catalogue, staff, shifts and patients (idempotent)."""
    from app.demo import DEMO_LOGINS, load_demo_data

    with unit_of_work():
        created = load_demo_data()
    click.echo("demo data created" if created else "demo data already present")
    for role, login, password in DEMO_LOGINS:
        click.echo(f"  {role:<14} {login:<16} {password}")


@oblako_cli.command("create-admin")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.password_option()
def create_admin_command(username: str, email: str, password: str) -> None:
    """Create an administrator account (the password policy applies)."""
    from app.accounts import create_user
    from app.permissions import ADMIN

    with unit_of_work():
        create_user(
            username=username,
            password=password,
            role_names=[ADMIN],
            first_name="Admin",
            last_name=username,
            email=email,
        )
    click.echo(f"administrator {username} created")


@oblako_cli.command("outbox-deliver")
@click.option("--limit", default=100, show_default=True, help="Messages to send at most.")
def outbox_deliver_command(limit: int) -> None:
    """Deliver the queued SMS and e-mail once (SMS_BACKEND / EMAIL_BACKEND)."""
    from app.outbox import deliver_pending

    click.echo(f"outbox: {deliver_pending(limit=limit)}")


@oblako_cli.command("reminders")
def reminders_command() -> None:
    """Send the due 24 h and 1 h reminders once."""
    from app.reminders import send_reminders

    click.echo(f"reminders: {send_reminders()}")


@oblako_cli.command("worker")
@click.option("--workers", default=2, show_default=True, help="Worker threads.")
def worker_command(workers: int) -> None:
    """Run the background worker (Huey consumer): outbox every minute, reminders every 5."""
    from flask import current_app

    from app.tasks import run_worker

    run_worker(current_app._get_current_object(), workers=workers)


@oblako_cli.command("verify-storage")
@click.option("--quiet", is_flag=True, help="Print the problems only.")
def verify_storage_command(quiet: bool) -> None:
    """Check every stored document, conclusion and recording against its SHA-256, and list
    the files no row points to (app/ops/storage_check.py). Exit status 1 on any problem."""
    from app.ops.storage_check import verify_storage

    report = verify_storage()
    for problem in report.problems:
        click.echo(str(problem))
    if not quiet:
        click.echo(
            f"verify-storage: {report.checked} row(s) checked, {report.unhashed} without a"
            f" recorded hash, {report.files} file(s) in the stores,"
            f" {len(report.problems)} problem(s)"
        )
    if not report.clean:
        raise SystemExit(1)


def register_cli(app: Flask) -> None:
    app.cli.add_command(oblako_cli)
