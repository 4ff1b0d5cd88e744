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

from cli import advice
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


def explain_locks(settings: Settings) -> list[tuple[str, object, str]]:
    """``apm config``'s rows for the lock keys: (key, value, where it came from), as ``Settings.explain``.

    Durations are shown as the file spells them (``"2s"``, ``"off"``);
    ``lock_levels`` as a table of code = level. PostgreSQL only: SQLite
    waits ``busy_timeout`` for its write lock instead.
    """
    from planner.locks import (
        DEFAULT_GATE,
        DEFAULT_LARGE_TABLE_ROWS,
        DEFAULT_LOCK_RETRIES,
        DEFAULT_LOCK_TIMEOUT,
        DEFAULT_STATEMENT_TIMEOUT,
        shown_duration,
    )

    config = settings.config
    defaults = {"lock_timeout": DEFAULT_LOCK_TIMEOUT, "statement_timeout": DEFAULT_STATEMENT_TIMEOUT,
                "lock_retries": DEFAULT_LOCK_RETRIES, "lock_gate": DEFAULT_GATE, "lock_levels": {},
                "large_table_rows": DEFAULT_LARGE_TABLE_ROWS}
    rows = []
    for key, default in defaults.items():
        given = getattr(settings, f"{key}_option", None)
        if given is not None:
            value, source = given, settings.sources.get(key, "option")
        elif config.get(key) is not None:
            value, source = config.get(key), f"config {config.path}"
        else:
            value, source = default, "default (PostgreSQL only)"
        if key in ("lock_timeout", "statement_timeout"):
            value = shown_duration(value)
        rows.append((key, dict(value) if key == "lock_levels" else value, source))
    return rows


def configure(settings: Settings, engine) -> None:
    """Give a PostgreSQL engine the run's lock settings, and tell each retry on stderr."""
    if not hasattr(engine, "lock_settings"):  # an engine without lock timeouts (SQLite waits by --busy-timeout)
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


def lock_refusal(lines: list[str], unchanged: str) -> str:
    return (f"lock findings stop this plan ({'; '.join(lines)}); {unchanged}. Accept them with allow = [\"code\"] "
            f"in the migration or --allow CODE (--yes does not), or change the migration (docs/locks.md)")


def check_locks(catalog_dir, engine, findings: list) -> tuple[list, bool, dict]:
    """``apm migrate check`` on PostgreSQL: the pending plan previewed and rolled back, for its lock findings.

    The findings are measured, not guessed, so the plan has to run: as
    ``--dry-run`` runs it, in one transaction under the migration lock,
    rolled back whatever it finds. Only when there is something to measure:
    a PostgreSQL database that exists, a catalog and history without errors
    (a plan that would be refused is not run), and pending migrations.
    Returns the findings (``scope = "locks"``), whether one gates (exit 12),
    and what was done, for the output (``previewed``, ``note``).
    """
    from cli.errors import CommandError, exit_code_for
    from planner.errors import CatalogError, PlanError
    from planner.loader import load_catalog
    from planner.locks import check_findings, gating
    from planner.plan import apply_plan, refuse_empty_upgrades

    done: dict = {"previewed": [], "passed_over": [], "note": None}
    if engine is None or getattr(engine, "name", None) != "postgresql":
        return [], False, done
    blocking = [f for f in findings if (f.severity == "error" and f.scope == "catalog") or f.code == "no-database"]
    if blocking:
        done["note"] = f"locks not previewed: {blocking[0].code} (only a plan that would run is previewed)"
        return [], False, done
    try:
        catalog = load_catalog(catalog_dir)
        plan = apply_plan(catalog, engine.applied())
        refuse_empty_upgrades(plan)
    except (CatalogError, PlanError) as exc:
        done["note"] = f"locks not previewed: {advice.message(exc)}"
        return [], False, done
    if not plan:
        done["note"] = "locks: nothing pending, nothing previewed"
        return [], False, done
    preview = engine.runner(catalog=catalog).preview(plan, make_plan=lambda ledger: apply_plan(catalog, ledger))
    if preview.error is not None:
        raise CommandError(f"{preview.error} (found by check's lock preview: nothing was committed)",
                           exit_code_for(preview.error)) from preview.error
    # A step whose statements the preview passed over (VACUUM: it runs only outside a transaction) was not
    # measured there: counting it as previewed would claim a lock check that did not happen.
    ran = [s.version for s in preview.steps if s.locks is not None and not s.passed_over]
    passed = [f"{s.version} `{statement}`" for s in preview.steps if s.locks is not None
              for statement in s.passed_over]
    done["previewed"] = ran
    done["passed_over"] = passed
    left = f"; passed over (it runs only outside a transaction and changes no schema or data): " \
        f"{', '.join(passed)}" if passed else ""
    left += f"; not previewed (transactional = False): {', '.join(preview.not_previewed)}" \
        if preview.not_previewed else ""
    of = f" of {len(preview.plan)}" if len(ran) < len(preview.plan) else ""
    done["note"] = (f"locks: previewed {len(ran)}{of} pending step(s) in one transaction, rolled back "
                    f"({engine.display} is unchanged){left}")
    return check_findings(preview.steps), bool(gating(engine.lock_policy, preview.steps)), done


ENGINE_HOOKS.append(configure)
