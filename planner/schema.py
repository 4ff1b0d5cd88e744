"""One schema model for every engine, and one difference function behind every line a person reads about it.

A ``Schema`` holds a database's user objects at one moment: tables (their
columns in order, primary key, unique, foreign key and check constraints,
and optionally how many rows each holds), indexes, triggers and views, plus
``others``: what one engine has and the model does not describe further
(PostgreSQL's schemas, extensions, types, sequences, routines, materialized
views), by kind and name with their definition. Each engine reads its own
catalog into it (``planner.engines.sqlite.schema``,
``planner.engines.postgresql.schema``); everything above the engines (the
migration tests' stairway, drift, squash, the rehearsal) compares Schemas and
never asks which engine read them. The ledger's own tables are never part of
a Schema: every step writes a ledger row, and that is not a change anyone asked about.

``diff`` is the one comparison. It returns ``SchemaChange`` values, each a
fact (kind, action, name, table, before, after), and the three audiences say
them in their own words from the same facts: ``SchemaChange.describe`` (the
rehearsal: ``drops column agents.metadata (TEXT DEFAULT '{}')``),
``stairway_line`` (``left index orders_by_date``, ``orders_2 is new``) and
``drift_line`` (``table projects: column archived_at is in the database, not
in its migrations``).

What the engines leave different (documented, and nothing here asks which one it is):

- SQLite keeps a table's whole definition as SQL (``Table.sql``); its
  reader takes the CHECK and COLLATE clauses out of it as constraints and
  columns, and two tables with the same columns and keys whose rest of SQL
  (``Table.rest``: STRICT, AUTOINCREMENT...) still differs are a ``table
  changed``; PostgreSQL keeps no table SQL, and its ``table changed`` is a
  table of another kind (``Table.options``: unlogged...).
- SQLite shows a column's primary key in its definition (``INTEGER PRIMARY
  KEY``, ``pk``); PostgreSQL only as a ``primary key`` constraint.
- PostgreSQL cannot put a column back where it was (only at the end), so
  its Schemas say ``ordered_columns=False`` and column order is not compared.
- A PostgreSQL trigger's name is unique per table only, so its key reads
  ``touch on tasks``; names outside the ``public`` schema are qualified
  (``tenant_a.tasks``).

One difference between a live schema and what its migrations make, the comparison that finds them, and
why drift could not be checked.

Shared by each engine's ``drift`` (SQLite's ``planner.engines.sqlite.schema``, PostgreSQL's
``planner.engines.postgresql.drift``): both replay into a ``Replay`` and
``compare`` it with the live ``Schema``, so both say a difference the same
way and a fleet's JSON has one shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from planner.errors import PlanError
# The change a diff gives is the preview's own fact (planner.preview), named here too: a run that previews a data
# migration needs it, and not this module's seven other dataclasses (start-up time, docs/performance.md).
from planner.preview import Action, ObjectKind, SchemaChange


#: Tables the ledger owns: never part of a snapshot (their indexes and triggers neither).
LEDGER_TABLES = ("schema_migrations", "schema_migrations_log")

Direction = Literal["rollback", "re-apply"]

#: Kinds of ``Schema.others`` whose two definitions are short enough to show when they differ.
_SHOWN_OTHERS = {"type", "extension", "schema"}
_OTHER_ORDER = ("schema", "extension", "type", "sequence", "materialized view", "function", "procedure", "aggregate")
_AROUND_PUNCTUATION = re.compile(r"\s*([(),])\s*")
_QUOTED = re.compile(r'"((?:[^"]|"")*)"|`([^`]*)`|\[([^\]]*)\]')


def comparable_sql(sql: str | None) -> str:
    """SQL with whitespace, identifier quoting and case evened out: a renamed table's rewritten SQL is not a change."""
    unquoted = _QUOTED.sub(lambda m: next(g for g in m.groups() if g is not None), sql or "")
    return _AROUND_PUNCTUATION.sub(r"\1", " ".join(unquoted.lower().split()))


@dataclass(frozen=True)
class Column:
    """One column: type, nullability, default, place in the primary key, and what else the engine says of it."""

    name: str
    type: str
    notnull: bool
    #: The default as SQL text (``'{}'``, ``CURRENT_TIMESTAMP``), ``None`` when there is none.
    default: str | None
    #: Position in the primary key (1-based), 0 when the column is not part of it (always 0 on PostgreSQL).
    pk: int
    #: 0 for ordinary columns, 2 or 3 for generated ones, 1 for virtual tables' hidden columns (SQLite).
    hidden: int = 0
    #: What the definition ends with beyond the above: PostgreSQL's ``GENERATED ... AS IDENTITY`` or ``... STORED``.
    extra: str = ""
    #: A COLLATE clause other than the default (SQLite's, upper-cased; PostgreSQL says it in ``type``).
    collation: str = ""

    def definition(self) -> str:
        """``TEXT COLLATE NOCASE NOT NULL DEFAULT '{}'``: how a change line shows a column."""
        parts = [self.type or "(no type)"]
        if self.collation:
            parts.append(f"COLLATE {self.collation}")
        if self.notnull:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.pk:
            parts.append("PRIMARY KEY")
        if self.hidden in (2, 3):
            parts.append("GENERATED")
        if self.extra:
            parts.append(self.extra)
        return " ".join(parts)


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key: its columns, the table and columns it references, its actions."""

    columns: tuple[str, ...]
    target: str
    #: ``None`` entries: the referenced table's primary key, not named (SQLite's ``REFERENCES t``).
    target_columns: tuple[str | None, ...]
    on_update: str = "NO ACTION"
    on_delete: str = "NO ACTION"
    match: str = "NONE"

    def describe(self, table: str) -> str:
        """``foreign key orders(customer_id) → customers(id) ON DELETE CASCADE``."""
        referenced = ", ".join(c or "?" for c in self.target_columns) if any(self.target_columns) else "primary key"
        actions = "".join(f" ON {what} {action}" for what, action in (("UPDATE", self.on_update),
                                                                       ("DELETE", self.on_delete))
                          if action and action != "NO ACTION")
        return f"foreign key {table}({', '.join(self.columns)}) → {self.target}({referenced}){actions}"


@dataclass(frozen=True)
class Constraint:
    """A primary key, unique, check or exclusion constraint (by what it says, so an automatic name is no difference).

    ``definition`` is the engine's text where the columns do not say it all
    (PostgreSQL's ``CHECK (price > 0)``); empty otherwise.
    """

    kind: Literal["primary key", "unique constraint", "check constraint", "exclusion constraint",
                  "constraint trigger"]
    #: The columns it is on; for a CHECK, the columns its expression reads (both engines say the same).
    columns: tuple[str, ...] = ()
    definition: str = ""
    #: Its name where one was given or made (PostgreSQL's ``projects_status_check``): shown, never compared.
    name: str = field(default="", compare=False)
    #: ``definition`` as written, where the compared one is evened out (SQLite's CHECK): what a line shows.
    shown: str = field(default="", compare=False)

    def describe(self, table: str) -> str:
        """``primary key orders(id)``, ``check constraint on orders: CHECK (total >= 0)``."""
        if self.kind in ("primary key", "unique constraint") and self.columns:
            return f"{self.kind} {table}({', '.join(self.columns)})"
        return f"{self.kind} on {table}: {self.shown or self.definition}"


@dataclass(frozen=True)
class Table:
    """A table: its columns in order, its keys and constraints, and its row count (``None`` when not counted)."""

    name: str
    #: The whole definition as SQL where the engine keeps one (SQLite); ``""`` on PostgreSQL.
    sql: str
    columns: tuple[Column, ...]
    rows: int | None = None
    foreign_keys: frozenset[ForeignKey] = frozenset()
    constraints: frozenset[Constraint] = frozenset()
    #: What kind of table beyond an ordinary one (PostgreSQL: ``partitioned``, ``foreign``, ``unlogged``).
    options: str = ""
    #: ``sql`` evened out and without what is compared apart (CHECK and COLLATE clauses, a literal default's
    #: parentheses): what is left to compare of a table's SQL (SQLite). ``""`` where ``sql`` is.
    rest: str = ""
    #: ``rest`` by part, each (as compared, as written): a column definition or table constraint, then what
    #: follows the column list (``STRICT``): what a line shows of a table whose rest differs.
    parts: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def column(self, name: str) -> Column | None:
        """The column called ``name`` (compared without case, as SQLite compares column names)."""
        wanted = name.lower()
        return next((c for c in self.columns if c.name.lower() == wanted), None)

    def shape(self) -> Table:
        """This table without its row count: what ``Schema.objects`` compares."""
        return self if self.rows is None else replace(self, rows=None)


@dataclass(frozen=True)
class Schema:
    """The user-visible schema of one database at one moment, on any engine."""

    tables: Mapping[str, Table] = field(default_factory=dict)
    #: name -> definition (SQL), for indexes, triggers and views. Indexes backing a constraint are the constraint's.
    indexes: Mapping[str, str] = field(default_factory=dict)
    triggers: Mapping[str, str] = field(default_factory=dict)
    views: Mapping[str, str] = field(default_factory=dict)
    #: (kind, name) -> definition: what one engine has beyond the above (PostgreSQL's types, sequences, routines...).
    others: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: Whether a column's place is part of the schema (not on PostgreSQL, which can only add a column last).
    ordered_columns: bool = True

    def objects(self) -> dict[tuple[str, str], object]:
        """(kind, name) -> its comparable definition, for every object, column and key: what drift tracks a
        migration's work by. Each column and key on its own, and a table by what it says beyond them, so a line
        names the migration that made (or last changed) that very column or key, never merely the last one that
        added something else to its table."""
        found: dict[tuple[str, str], object] = {}
        for name, table in self.tables.items():
            found[("table", name)] = _table_value(table)
            found.update({("column", f"{name}.{c.name.lower()}"): c.definition() for c in table.columns})
            found.update({("key", key_id(name, k)): k for k in table.foreign_keys | table.constraints})
        for kind, named in (("index", self.indexes), ("trigger", self.triggers), ("view", self.views)):
            found.update({(kind, name): comparable_sql(sql) for name, sql in named.items()})
        found.update(self.others)
        return found

    def names(self) -> list[str]:
        """``table orders``, ``index orders_by_date``...: every user object, for "what is left" checks."""
        named = [f"{kind} {name}" for kind, objects in (("table", self.tables), ("index", self.indexes),
                                                       ("trigger", self.triggers), ("view", self.views))
                 for name in sorted(objects)]
        return named + [f"{kind} {name}" for kind, name in sorted(self.others, key=_other_order)]

    def has(self, kind: str, name: str, table: str | None = None) -> bool:
        """Whether the object exists: ``has("table", "tasks")``, ``has("column", "priority", "tasks")``."""
        if kind == "column":
            found = self.tables.get(table or "")
            return found is not None and found.column(name) is not None
        named = {"table": self.tables, "index": self.indexes, "trigger": self.triggers, "view": self.views}.get(kind)
        return name in named if named is not None else (kind, name) in self.others

    def differences(self, after: Schema, direction: Direction) -> list[str]:
        """What ``after`` has that this schema lacks and the reverse, in the stairway's words (``stairway_line``)."""
        return [stairway_line(change, direction) for change in diff(self, after) if change.kind != "rows"]

    def to_json(self) -> dict[str, Any]:
        """Plain data: tables with columns and rows, and name -> SQL for the rest."""
        return {
            "tables": {
                name: {
                    "sql": table.sql,
                    "rows": table.rows,
                    "columns": [
                        {"name": c.name, "type": c.type, "notnull": c.notnull, "default": c.default,
                         "pk": c.pk, "hidden": c.hidden}
                        for c in table.columns
                    ],
                }
                for name, table in self.tables.items()
            },
            "indexes": dict(self.indexes),
            "triggers": dict(self.triggers),
            "views": dict(self.views),
        }


def _table_value(table: Table) -> tuple[str, str]:
    """What a table is tracked by beside its columns and keys: its kind, and what follows its column list."""
    return table.options, table.parts[-1][0] if table.parts else ""


def _other_order(key: tuple[str, str]) -> tuple[int, str]:
    kind, name = key
    return (_OTHER_ORDER.index(kind) if kind in _OTHER_ORDER else len(_OTHER_ORDER)), name



# --------------------------------------------------------------------------
# Comparing two schemas: the one difference function
# --------------------------------------------------------------------------


def diff(before: Schema, after: Schema) -> list[SchemaChange]:
    """Everything that differs, in a stable order: tables, their columns and keys, indexes, triggers, views,
    the engine's other objects, row counts.

    A table present on both sides is compared column by column and key by
    key; when none of those differ but its columns' order does, it is one
    ``table reordered`` (``before``/``after``: the column names in order),
    and when only its kind or the rest of its SQL does (SQLite: STRICT,
    AUTOINCREMENT), one ``table changed`` (``before``/``after``: both kinds, or both SQL texts).
    A table that appeared or vanished is one change, not one per column.
    Row counts are compared for tables present and counted on both sides.
    """
    if before == after:
        return []  # the common case (a fleet's drift, a correct stair), at the cost of one comparison
    changes = [*_named_changes("table", {n: t.sql for n, t in before.tables.items()},
                               {n: t.sql for n, t in after.tables.items()}, changed=False)]
    common = sorted(before.tables.keys() & after.tables.keys())
    ordered = before.ordered_columns and after.ordered_columns
    for name in common:
        old, new = before.tables[name], after.tables[name]
        if old.shape() != new.shape():
            changes.extend(_table_changes(old, new, ordered))
    named: tuple[tuple[ObjectKind, Mapping[str, str], Mapping[str, str]], ...] = (
        ("index", before.indexes, after.indexes), ("trigger", before.triggers, after.triggers),
        ("view", before.views, after.views))
    for kind, old_named, new_named in named:
        changes.extend(_named_changes(kind, old_named, new_named))
    changes.extend(_other_changes(before.others, after.others))
    for name in common:
        old_rows, new_rows = before.tables[name].rows, after.tables[name].rows
        if old_rows is not None and new_rows is not None and old_rows != new_rows:
            changes.append(SchemaChange("rows", "changed", name, table=name, before=old_rows, after=new_rows))
    return changes


def _table_changes(old: Table, new: Table, ordered: bool) -> list[SchemaChange]:
    changes: list[SchemaChange] = []
    old_columns = {c.name.lower(): c for c in old.columns}
    new_columns = {c.name.lower(): c for c in new.columns}
    for key, column in old_columns.items():
        if key not in new_columns:
            changes.append(SchemaChange("column", "removed", column.name, old.name, before=column.definition()))
    for key, column in new_columns.items():
        if key not in old_columns:
            changes.append(SchemaChange("column", "added", column.name, old.name, after=column.definition()))
    for key, column in old_columns.items():
        other = new_columns.get(key)
        if other is not None and other.definition() != column.definition():
            changes.append(
                SchemaChange("column", "changed", column.name, old.name, column.definition(), other.definition())
            )
    keys: list[tuple[str, ForeignKey | Constraint]] = [(k.describe(old.name), k) for k in
                                                       old.foreign_keys ^ new.foreign_keys]
    keys += [(c.describe(old.name), c) for c in old.constraints ^ new.constraints]
    for described, rule in sorted(keys, key=lambda pair: (isinstance(pair[1], Constraint), repr(pair[1]))):
        present = rule in new.foreign_keys or rule in new.constraints
        changes.append(SchemaChange("key", "added" if present else "removed", described, old.name))
    if changes:
        return changes
    was, now = [c.name for c in old.columns], [c.name for c in new.columns]
    if ordered and was != now:
        return [SchemaChange("table", "reordered", old.name, before=", ".join(was), after=", ".join(now))]
    if old.options != new.options:
        return [SchemaChange("table", "changed", old.name, before=table_kind(old.options),
                             after=table_kind(new.options))]
    if _rest(old) != _rest(new):
        return [SchemaChange("table", "changed", old.name, before=" ".join(old.sql.split()),
                             after=" ".join(new.sql.split()))]
    return []


def _rest(table: Table) -> str:
    """What is left to compare of a table's SQL once its columns and keys are (``Table.rest`` where read)."""
    return table.rest or comparable_sql(table.sql)


def table_kind(options: str) -> str:
    """``unlogged``, ``partitioned``...: how a line says what kind of table ``Table.options`` makes."""
    return options or "an ordinary table"


def key_id(table: str, rule: ForeignKey | Constraint) -> str:
    """What names a key of ``table`` through changes of it: a foreign key by its columns and target, a primary
    key or unique constraint by its columns, any other by its name (or, unnamed, its definition); ``Schema.objects``
    keys it so, and drift pairs a missing and an extra key that share it into one changed line."""
    if isinstance(rule, ForeignKey):
        return f"{table}: foreign key ({', '.join(rule.columns)}) → {rule.target}"
    if rule.kind in ("primary key", "unique constraint") and rule.columns:
        return f"{table}: {rule.kind} ({', '.join(rule.columns)})"
    return f"{table}: {rule.kind} {rule.name or rule.definition}"


def attributes(definition: str | None) -> dict[str, str]:
    """``label=value`` parts joined by ``\\x1f`` (how a sequence or routine is read, ``Schema.others``) as a dict;
    ``{}`` for a definition in another form."""
    parts = (definition or "").split("\x1f")
    return dict(part.split("=", 1) for part in parts) if all("=" in part for part in parts) else {}


#: How an attribute that differs is said: ``its increment is 5`` / ``it is VOLATILE`` / ``its body differs``.
_ATTRIBUTE_WORDS = {"type": "its type is {}", "start": "it starts at {}", "increment": "its increment is {}",
                    "minimum": "its minimum is {}", "maximum": "its maximum is {}", "cache": "its cache is {}",
                    "returns": "it returns {}", "language": "its language is {}", "settings": "its settings are {}"}


def attribute_words(before: str | None, after: str | None) -> str:
    """What differs between two definitions of a sequence or routine, in words, database side first:
    ``its increment is 5 in the database, 1 in its migrations``; ``its body differs`` (a body is never shown)."""
    was, now = attributes(before), attributes(after)
    if not was or not now:
        return f"the database has {after}; its migrations make {before}"
    said = []
    for label in [*was, *(label for label in now if label not in was)]:
        old, new = was.get(label, "none"), now.get(label, "none")
        if old == new:
            continue
        if label == "body":
            said.append("its body differs")
        else:
            said.append(f"{_ATTRIBUTE_WORDS.get(label, 'it is {}').format(new)} in the database, {old} in its "
                        f"migrations")
    return "; ".join(said) or "its definition differs"


def _named_changes(kind: ObjectKind, old: Mapping[str, str], new: Mapping[str, str],
                   changed: bool = True) -> Iterator[SchemaChange]:
    for name in sorted(old.keys() - new.keys()):
        yield SchemaChange(kind, "removed", name, before=old[name])
    for name in sorted(new.keys() - old.keys()):
        yield SchemaChange(kind, "added", name, after=new[name])
    for name in sorted(old.keys() & new.keys()) if changed else ():
        if old[name] != new[name] and comparable_sql(old[name]) != comparable_sql(new[name]):  # a renamed table's
            # indexes and triggers are rewritten with quotes: not a change
            yield SchemaChange(kind, "changed", name, before=old[name], after=new[name])


def _other_changes(old: Mapping[tuple[str, str], str], new: Mapping[tuple[str, str], str]) -> list[SchemaChange]:
    changes = []
    for key in sorted(old.keys() | new.keys(), key=_other_order):
        before, after = old.get(key), new.get(key)
        if before != after:
            action: Action = "added" if before is None else "removed" if after is None else "changed"
            changes.append(SchemaChange("other", action, f"{key[0]} {key[1]}", before=before, after=after))
    return changes


# --------------------------------------------------------------------------
# The same facts in the stairway's and drift's words
# --------------------------------------------------------------------------


def stairway_line(change: SchemaChange, direction: Direction) -> str:
    """One change in the migration tests' words: ``left index orders_by_date``, ``column x is TEXT, was INTEGER``."""
    what = change.subject
    if change.action == "added":  # there after the rollback, not before it: the downgrade forgot it
        return f"left {what}" if direction == "rollback" else f"{what} is new"
    if change.action == "removed":  # gone after the rollback: the downgrade took what it did not create
        return f"dropped {what}" if direction == "rollback" else f"{what} is missing"
    if change.kind == "column" or (change.kind == "other" and _other_key(change.name)[0] in _SHOWN_OTHERS):
        return (f"changed {what}: {change.before} → {change.after}" if direction == "rollback"
                else f"{what} is {change.after}, was {change.before}")
    if change.kind == "other" and attributes(str(change.before)):
        return (f"changed {what} ({_attribute_changes(change)})" if direction == "rollback"
                else f"{what} differs ({_attribute_changes(change)})")
    if change.action == "reordered":
        return (f"changed the column order of table {change.name} ({change.before} -> {change.after}): SQLite "
                f"adds a column last, so a downgrade that re-adds a dropped one must rebuild the table "
                f"(planner.rebuild) to put it back in place")
    if change.kind == "table":
        return (f"changed table {change.name}: {change.before} → {change.after}" if direction == "rollback"
                else f"table {change.name} is {change.after}, was {change.before}")
    return f"changed {what}" if direction == "rollback" else f"{what} differs"


def _attribute_changes(change: SchemaChange) -> str:
    was, now = attributes(str(change.before)), attributes(str(change.after))
    return ", ".join("body" if label == "body" else f"{label}: {was.get(label, 'none')} → {now.get(label, 'none')}"
                     for label in was.keys() | now.keys() if was.get(label) != now.get(label))


def drift_line(change: SchemaChange, origin: Mapping[tuple[str, str], str]) -> tuple[str, str, str]:
    """One difference between what the migrations make (``before``) and the live schema (``after``).

    Returns (object, kind, line): the object named (``column projects.archived_at``), ``extra``,
    ``missing`` or ``changed``, and the line a person reads, both sides said where both exist. ``origin``
    maps (kind, name), as ``Schema.objects`` keys them, to the migration that made or last changed the
    object (a column its own, not its table's); no migration is named where none is known.
    """
    if change.kind == "column":
        key: tuple[str, str] = ("column", f"{change.table}.{change.name.lower()}")
        obj, line = f"column {change.table}.{change.name}", f"table {change.table}: column {change.name}"
    elif change.kind == "key":  # compare() says keys itself (paired); this is the plain fallback
        key, obj, line = ("key", ""), f"table {change.table}", f"table {change.table}: {change.name}"
    else:
        key = _other_key(change.name) if change.kind == "other" else (change.kind, change.name)
        obj = line = change.subject
    by = f" ({origin[key]})" if key in origin else ""
    if change.action == "added":
        return obj, "extra", f"{line} is in the database, not in its migrations"
    if change.action == "removed":
        return obj, "missing", f"{line}{by} is missing from the database"
    if change.kind == "column" or (change.kind == "other" and key[0] in _SHOWN_OTHERS):
        return obj, "changed", f"{line} is {change.after} in the database, {change.before} in its migrations{by}"
    if change.action == "reordered":  # which migration put them so cannot be told: none is named
        return obj, "changed", (f"{line} differs from its migrations: its columns are in another order "
                                f"({change.after}; the migrations make {change.before})")
    if change.kind == "other" and attributes(str(change.before)):
        why = attribute_words(str(change.before), str(change.after))
    else:
        why = (f"the database has {' '.join(str(change.after).split())}; its migrations make "
               f"{' '.join(str(change.before).split())}")
    return obj, "changed", f"{line} differs from its migrations{by}: {why}"


def _table_line(old: Table, new: Table, origin: Mapping[tuple[str, str], str]) -> Difference:
    """A table whose columns and keys agree but whose kind (PostgreSQL: unlogged...) or rest of SQL does not.

    Its origin is named only when what differs is what ``Schema.objects`` tracks the table by (its kind, the
    words after its column list): a difference inside the column list may be any migration's that rebuilt it."""
    tracked = _table_value(old) != _table_value(new)
    by = f" ({origin[('table', old.name)]})" if tracked and ("table", old.name) in origin else ""
    if old.options != new.options:
        why = f"it is {table_kind(new.options)} in the database, {table_kind(old.options)} in its migrations"
    else:
        why = _rest_words(old, new)
    return Difference(f"table {old.name}", "changed", f"table {old.name} differs from its migrations{by}: {why}")


def _rest_words(old: Table, new: Table) -> str:
    """What differs in the rest of a table's SQL, by part where the parts say it (a generated column's
    expression, STRICT), else both SQL texts whole (the same parts in another order)."""
    was, now = {c for c, _ in old.parts}, {c for c, _ in new.parts}
    gone = [shown for compared, shown in old.parts if compared and compared not in now]
    came = [shown for compared, shown in new.parts if compared and compared not in was]
    if gone and came:
        return f"the database has {', '.join(came)} where its migrations make {', '.join(gone)}"
    if gone:
        return f"the database lacks {', '.join(gone)}, which its migrations make"
    if came:
        return f"the database has {', '.join(came)}, which its migrations do not make"
    return f"the database has {' '.join(new.sql.split())}; its migrations make {' '.join(old.sql.split())}"


def _key_label(table: str, rule: ForeignKey | Constraint, twin: ForeignKey | Constraint | None = None
               ) -> tuple[str, str]:
    """(what a key is called in a line and in JSON's ``object``, what it says): ``foreign key
    tasks(project_id) → projects(id)`` / ``ON DELETE CASCADE``, ``check constraint projects_status_check`` /
    ``CHECK (...)``. A foreign key paired with its ``twin`` says the columns it references too when those differ."""
    if isinstance(rule, ForeignKey):
        whole = rule.describe(table) + (f" MATCH {rule.match}" if rule.match not in ("NONE", "SIMPLE") else "")
        plain = ForeignKey(rule.columns, rule.target, rule.target_columns).describe(table)
        if isinstance(twin, ForeignKey) and twin.target_columns != rule.target_columns:
            return plain, whole[len(f"foreign key {table}({', '.join(rule.columns)}) "):]
        return plain, whole[len(plain):].strip() or "with no ON UPDATE or ON DELETE action"
    if rule.kind in ("primary key", "unique constraint") and rule.columns and not rule.definition:
        return rule.describe(table), ""
    named = rule.name or (f"on {table}({', '.join(rule.columns)})" if rule.columns else f"on {table}")
    return f"{rule.kind} {named}", rule.shown or rule.definition


def _key_lines(table: str, old: Table, new: Table, origin: Mapping[tuple[str, str], str]) -> list[Difference]:
    """The keys of ``table`` that differ, a missing and an extra one that name the same key (``key_id``, else
    the only two of a kind) said as one changed line."""
    gone: list[ForeignKey | Constraint] = sorted((*(old.foreign_keys - new.foreign_keys),
                                                  *(old.constraints - new.constraints)), key=repr)
    came: list[ForeignKey | Constraint] = sorted((*(new.foreign_keys - old.foreign_keys),
                                                  *(new.constraints - old.constraints)), key=repr)
    pairs: list[tuple[ForeignKey | Constraint, ForeignKey | Constraint]] = []
    for rule in list(gone):
        twin = next((other for other in came if key_id(table, other) == key_id(table, rule)), None)
        if twin is None and not isinstance(rule, ForeignKey):
            alike = [other for other in came if isinstance(other, Constraint) and other.kind == rule.kind]
            if len(alike) == 1 and sum(isinstance(r, Constraint) and r.kind == rule.kind for r in gone) == 1:
                twin = alike[0]
        if twin is not None:
            pairs.append((rule, twin))
            gone.remove(rule)
            came.remove(twin)
    found = []
    for rule in gone:
        label, says = _key_label(table, rule)
        by = origin.get(("key", key_id(table, rule)))
        whole = rule.describe(table) if isinstance(rule, ForeignKey) else f"{label} {says}".strip()
        found.append(Difference(label, "missing", f"table {table}: {whole}{f' ({by})' if by else ''} is missing "
                                                  f"from the database"))
    for rule in came:
        label, says = _key_label(table, rule)
        whole = rule.describe(table) if isinstance(rule, ForeignKey) else f"{label} {says}".strip()
        found.append(Difference(label, "extra", f"table {table}: {whole} is in the database, not in its migrations"))
    for rule, twin in pairs:
        label, says = _key_label(table, rule, twin)
        by = origin.get(("key", key_id(table, rule)))
        found.append(Difference(label, "changed", f"table {table}: {label} is {_key_label(table, twin, rule)[1]} in "
                                                  f"the database, {says} in its migrations{f' ({by})' if by else ''}"))
    return found


def _other_key(name: str) -> tuple[str, str]:
    """``materialized view app.totals`` -> (``materialized view``, ``app.totals``): ``Schema.others``' key."""
    kind = next((k for k in _OTHER_ORDER if name.startswith(k + " ")), name.split(" ", 1)[0])
    return kind, name[len(kind) + 1:]


@dataclass(frozen=True)
class Difference:
    """One way the live schema differs from its migrations.

    ``object`` names it (``column projects.archived_at``), ``kind`` is
    ``extra`` (in the database, not in its migrations), ``missing`` (the
    other way) or ``changed``, and ``detail`` is the line a person reads.
    """

    object: str
    kind: str
    detail: str

    @property
    def line(self) -> str:
        return self.detail

    def to_json(self) -> dict[str, Any]:
        return {"object": self.object, "kind": self.kind, "detail": self.detail}


class DriftUnchecked(PlanError):
    """The applied migrations cannot be replayed: some are not in the catalog, or one fails on empty tables."""

    def __init__(self, database: str, reason: str):
        #: Why, said once (a fleet's note shows this alone): ``the replay of its applied migrations in a
        #: scratch database failed: migration 0030 failed during apply: TypeError: ...``.
        self.database, self.reason = database, reason
        super().__init__(f"drift of {database} cannot be checked: {self.reason}; nothing was changed")


def replay_failed(cause: str) -> str:
    """Why drift cannot be checked when the replay failed: ``cause``, one line, said as what failed."""
    return f"the replay of its applied migrations in a scratch database failed: {cause}"


@dataclass(frozen=True)
class Replay:
    """The schema the applied migrations make, and which migration last made or changed each object."""

    state: Schema
    #: (kind, name), as ``Schema.objects`` keys them -> the version that created or last changed it.
    origin: Mapping[tuple[str, str], str]


def compare(expected: Replay, live: Schema) -> list[Difference]:
    """Every difference between what the migrations make (``expected``) and the live schema, on either engine,
    one line each: a table's keys paired (``_key_lines``), a table's kind or rest of SQL said with both sides."""
    found: list[Difference] = []
    keyed: set[str] = set()
    for change in diff(expected.state, live):
        if change.kind == "rows":
            continue
        if change.kind == "key" and change.table is not None:
            if change.table not in keyed:
                keyed.add(change.table)
                found.extend(_key_lines(change.table, expected.state.tables[change.table],
                                        live.tables[change.table], expected.origin))
        elif change.kind == "table" and change.action == "changed":
            found.append(_table_line(expected.state.tables[change.name], live.tables[change.name], expected.origin))
        else:
            found.append(Difference(*drift_line(change, expected.origin)))
    return found
