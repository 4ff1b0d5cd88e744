"""The lock options of a run (``--lock-timeout``, ``--statement-timeout``, ``--lock-retries``, ``--allow``).

Each option stores into the command's ``Settings`` (as the shared options
do), so the commands' own signatures stay as they are; ``lock_settings``
resolves them against the configuration file (``lock_timeout``,
``statement_timeout``, ``lock_retries``) and the defaults of
``planner.locks``. SQLite has no lock timeout of this kind: its writer
waits ``--busy-timeout`` for the write lock, and in WAL mode its readers
never wait for a writer, so these settings are not used there
(docs/locks.md).
"""

from __future__ import annotations

import click

from cli.options import ENGINE_HOOKS, Settings


class DurationType(click.ParamType):
    """``300ms``, ``5s``, ``2min``, ``1h``; ``0`` or ``off`` for no limit (a bare number is refused)."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        from planner.locks import parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


def _store(name: str):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is not None and value != ():
            settings = ctx.ensure_object(Settings)
            if name == "allow":
                value = tuple(getattr(settings, "allow_option", ()) or ()) + tuple(value)
            setattr(settings, f"{name}_option", value)
            settings.sources[name] = f"option {param.opts[0]}"
        return value

    return callback


def _allowed(ctx: click.Context, param: click.Parameter, value):
    from planner.locks import CODES

    for code in value or ():
        if code not in CODES:
            raise click.BadParameter(f"{code!r} is no finding code; the codes are {', '.join(CODES)}")
    return _store("allow")(ctx, param, value)


def lock_options(*, timeouts: bool = True):
    """The options of a command that runs migrations (``timeouts``), or only checks them (``--allow``)."""

    def decorate(command):
        options = []
        if timeouts:
            options += [
                click.option("--lock-timeout", type=DURATION, expose_value=False, callback=_store("lock_timeout"),
                             help="PostgreSQL: how long a step may wait for a lock before it is rolled back and "
                                  "tried again, e.g. 300ms, 5s; off for no limit [default: 2s; config lock_timeout]."),
                click.option("--statement-timeout", type=DURATION, expose_value=False,
                             callback=_store("statement_timeout"),
                             help="PostgreSQL: the longest a statement of a migration may run [default: off; "
                                  "config statement_timeout]."),
                click.option("--lock-retries", type=click.IntRange(0, 100), metavar="N", expose_value=False,
                             callback=_store("lock_retries"),
                             help="PostgreSQL: how many times a step that hit the lock timeout is tried again "
                                  "[default: 3; config lock_retries]."),
            ]
        options.append(
            click.option("--allow", "allow", metavar="CODE", multiple=True, expose_value=False, callback=_allowed,
                         help="Accept lock findings with this code for this run (repeatable; see docs/locks.md). "
                              "--yes never accepts them."))
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def lock_settings(settings: Settings):
    """The run's ``LockSettings``: an option, else the config file, else the default (``planner.locks``)."""
    from planner.locks import DEFAULT_LOCK_RETRIES, DEFAULT_LOCK_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT, LockSettings

    def pick(name: str, default):
        given = getattr(settings, f"{name}_option", None)
        if given is not None:
            return given
        configured = settings.config.get(name)
        return configured if configured is not None else default

    return LockSettings(lock_timeout=pick("lock_timeout", DEFAULT_LOCK_TIMEOUT),
                        statement_timeout=pick("statement_timeout", DEFAULT_STATEMENT_TIMEOUT),
                        retries=pick("lock_retries", DEFAULT_LOCK_RETRIES))


def lock_policy(settings: Settings):
    """Which lock findings stop a run: the config file's levels and threshold, and the run's ``--allow``."""
    from planner.locks import DEFAULT_GATE, DEFAULT_LARGE_TABLE_ROWS, LockPolicy

    config = settings.config
    return LockPolicy(gate=config.get("lock_gate") or DEFAULT_GATE, levels=config.get("lock_levels") or {},
                      large_table_rows=config.get("large_table_rows") or DEFAULT_LARGE_TABLE_ROWS,
                      allowed=tuple(getattr(settings, "allow_option", None) or ()))


def configure(settings: Settings, engine) -> None:
    """Give a PostgreSQL engine the run's lock settings, and tell each retry on stderr."""
    if getattr(engine, "name", None) != "postgresql":
        return
    from planner.engines.postgresql import lock_timeout as pg_lock_timeout
    from planner.locks import shown_duration

    engine.lock_settings = chosen = lock_settings(settings)
    engine.lock_policy = lock_policy(settings)
    limit = shown_duration(chosen.lock_timeout)

    def tell(version: str, attempt: int, attempts: int, pause: float, blocker) -> None:
        held = f"held by {blocker.describe()}" if blocker is not None else "held by another session"
        click.echo(f"{version}: waited {limit} for a lock {held}; rolled back so nothing queues behind it, trying "
                   f"again in {pause:.1f} s (attempt {attempt + 1} of {attempts})", err=True)

    pg_lock_timeout.listen(tell)


def gating_findings(preview) -> list[str]:
    """Lines for the lock findings of ``preview`` that stop the run (at or above the gate, not accepted)."""
    from cli.options import settings
    from planner.locks import gating

    return [f"{version}: {finding.code} on {finding.relation} ({finding.level})"
            for version, finding in gating(lock_policy(settings()), preview.steps)]


def lock_refusal(lines: list[str], unchanged: str) -> str:
    return (f"lock findings stop this plan ({'; '.join(lines)}); {unchanged}. Accept them with allow = [\"code\"] "
            f"in the migration or --allow CODE (--yes does not), or change the migration (docs/locks.md)")


ENGINE_HOOKS.append(configure)
