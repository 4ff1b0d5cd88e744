"""PostgreSQL's schema read into ``planner.schema.Schema``: every user object from ``pg_catalog`` in one query.

PostgreSQL keeps a table's definition spread over catalogs, and its own
``pg_get_*def`` functions print each piece canonically, so the reading is
one ``UNION ALL`` of rows ``(kind, table, name, value, a, b, c, position)``
turned into the model: tables (partitioned, foreign, unlogged), columns
(type with collation, NOT NULL, default, identity, generated), constraints
(primary key and unique by their columns, foreign keys with their actions,
check and exclusion by definition, so an automatic name is not a
difference), indexes (those backing a constraint are the constraint's),
views and triggers; and in ``Schema.others`` what the model has no field
for: schemas, extensions, enum, domain, range and composite types,
sequences (type, start, increment, minimum, maximum, cache, cycle; those a
serial or identity column owns are part of the column), materialized views,
functions and procedures (by signature: what they return, language,
volatility, strictness, security, parallel safety, settings, and their body
by a hash that is compared, never shown).

Names outside ``public`` are qualified (``app.tasks``); a trigger's key is
``touch on tasks`` (PostgreSQL's trigger names are unique per table only).
Column order is not part of the schema (``ordered_columns=False``): a
column can only be added last. The ledger's tables are left out, as is
everything of ``pg_catalog``, ``information_schema`` and ``pg_toast``, and
anything an extension owns.
"""

from __future__ import annotations

from typing import Any

from planner.ledger import LOG_TABLE, TABLE
from planner.schema import Column, Constraint, ForeignKey, Schema, Table

#: Whether schema ``{ns}`` (a ``pg_namespace`` row) is one the member's migrations own (``own_schemas``); on a
#: connection it was never said for (a scratch database, a test's), every schema. Read from two settings of the
#: connection, so the statements stay the same text (prepared once) whoever runs them.
OWNED = ("CASE WHEN current_setting('apm.schemas', true) <> '' "
         "THEN {ns}.nspname = ANY(current_setting('apm.schemas', true)::text[]) "
         "ELSE {ns}.nspname <> ALL(coalesce(nullif(current_setting('apm.skipped', true), '')::text[], "
         "ARRAY[]::text[])) END")
_USER = ("{ns}.nspname NOT IN ('pg_catalog', 'information_schema') AND {ns}.nspname NOT LIKE 'pg\\_toast%%' "
         "AND {ns}.nspname NOT LIKE 'pg\\_temp\\_%%' AND " + OWNED)
#: ``own_schemas``'s one statement: a tenant (its ledger's schema, not ``public``, first on its search_path, as
#: ``PostgresEngine.tenant`` says it) owns its schema; a plain database every schema but those holding another
#: ledger (another member's: a tenant's), whatever its migrations create during the run.
_OWN = """
SELECT tenant, set_config('apm.schemas', CASE WHEN tenant THEN ARRAY[%(ledger)s]::text ELSE '' END, false),
       set_config('apm.skipped', CASE WHEN tenant THEN '' ELSE ARRAY(
           SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relname = %(table)s AND c.relkind IN ('r', 'p') AND n.nspname <> %(ledger)s)::text END, false)
FROM (SELECT %(ledger)s <> 'public' AND current_schema() = %(ledger)s AS tenant) t
"""
#: Separates the column names of a constraint in one text value (no identifier holds it).
_SEP = "\x1f"


def _not_extension(catalog: str, oid: str) -> str:
    return (f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass "
            f"AND e.objid = {oid} AND e.deptype = 'e')")


def _qualified(ns: str, name: str) -> str:
    return f"CASE WHEN {ns}.nspname = 'public' THEN '' ELSE {ns}.nspname || '.' END || {name}"


def _names(relation: str, numbers: str) -> str:
    """The column names of ``numbers`` (an attnum array) of ``relation``, in the array's order, joined by ``_SEP``."""
    return (f"(SELECT string_agg(pa.attname, chr(31) ORDER BY u.n) FROM unnest({numbers}) WITH ORDINALITY u(num, n) "
            f"JOIN pg_attribute pa ON pa.attrelid = {relation} AND pa.attnum = u.num)")


#: A column ``a`` of ``pg_attribute`` as four values: its type (with a collation other than the type's), ``'t'``
#: when NOT NULL, its default, and an identity or generated clause; ``Column.definition`` joins them. Shared with
#: the preview's catalog reading (``postgresql.snapshot``), so a preview line and drift say a column alike.
COLUMN_PARTS = """format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
               THEN ' COLLATE ' || quote_ident(co.collname) ELSE '' END,
       CASE WHEN a.attnotnull THEN 't' ELSE 'f' END,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
       CASE WHEN a.attgenerated = 's' THEN 'GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, d.adrelid) || ') STORED'
            WHEN a.attidentity = 'a' THEN 'GENERATED ALWAYS AS IDENTITY'
            WHEN a.attidentity = 'd' THEN 'GENERATED BY DEFAULT AS IDENTITY' ELSE '' END"""
#: The catalogs ``COLUMN_PARTS`` reads beside ``a`` (outer joins: a relation without columns keeps its row).
COLUMN_JOINS = """
  LEFT JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"""

#: A routine ``p`` (a ``pg_proc`` row) as ``label=value`` parts (``planner.schema.attributes``): what it returns,
#: its language, volatility, strictness, security, parallel safety and settings, and its body (by a hash, which
#: compares it; a line only says that the body differs). Shared with the preview's reading (``snapshot``).
ROUTINE = """concat_ws(chr(31), 'returns=' || coalesce(pg_get_function_result(p.oid), 'nothing'),
       'language=' || (SELECT l.lanname FROM pg_language l WHERE l.oid = p.prolang),
       'volatility=' || CASE p.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END,
       'strictness=' || CASE WHEN p.proisstrict THEN 'STRICT' ELSE 'CALLED ON NULL INPUT' END,
       'security=' || CASE WHEN p.prosecdef THEN 'SECURITY DEFINER' ELSE 'SECURITY INVOKER' END,
       'parallel=' || CASE p.proparallel WHEN 's' THEN 'PARALLEL SAFE' WHEN 'r' THEN 'PARALLEL RESTRICTED'
                      ELSE 'PARALLEL UNSAFE' END,
       'settings=' || coalesce(array_to_string(p.proconfig, ', '), 'none'),
       'body=' || md5(coalesce(p.prosrc, '')))"""

_QUERY = f"""
WITH rel AS (
    SELECT c.oid, c.relkind, c.relpersistence, {_qualified('n', 'c.relname')} AS qname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE {_USER.format(ns='n')} AND {_not_extension('pg_class', 'c.oid')}
      AND NOT (n.nspname = %(ledger_schema)s AND c.relname IN (%(ledger)s, %(log)s))
)
-- text, not name: the first branch types every column, and name would cut a definition at 63 bytes
SELECT 'schema'::text, ''::text, n.nspname::text, ''::text, NULL::text, NULL::text, NULL::text, 0 FROM pg_namespace n
 WHERE {_USER.format(ns='n')} AND n.nspname <> 'public' AND {_not_extension('pg_namespace', 'n.oid')}
UNION ALL
SELECT 'extension', '', x.extname, x.extversion, NULL, NULL, NULL, 0 FROM pg_extension x
UNION ALL
SELECT 'table', '', r.qname, concat_ws(' ', CASE r.relkind WHEN 'p' THEN 'partitioned' WHEN 'f' THEN 'foreign' END,
                                       CASE r.relpersistence WHEN 'u' THEN 'unlogged' END), NULL, NULL, NULL, 0
  FROM rel r WHERE r.relkind IN ('r', 'p', 'f')
UNION ALL
SELECT 'column', r.qname, a.attname, {COLUMN_PARTS}, a.attnum
  FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped {COLUMN_JOINS}
 WHERE r.relkind IN ('r', 'p', 'f')
UNION ALL
SELECT 'constraint', r.qname, pg_get_constraintdef(k.oid),
       k.contype::text || k.confupdtype::text || k.confdeltype::text || k.confmatchtype::text,
       {_names('k.conrelid', 'k.conkey')},
       (SELECT {_qualified('fn', 'f.relname')} FROM pg_class f JOIN pg_namespace fn ON fn.oid = f.relnamespace
         WHERE f.oid = k.confrelid),
       CASE WHEN k.contype = 'f' THEN {_names('k.confrelid', 'k.confkey')} ELSE k.conname::text END, 0
  FROM pg_constraint k JOIN rel r ON r.oid = k.conrelid WHERE k.contype IN ('p', 'u', 'f', 'c', 'x', 't')
UNION ALL
SELECT 'index', '', i.qname, pg_get_indexdef(x.indexrelid) || CASE WHEN x.indisvalid THEN '' ELSE ' (INVALID)' END,
       NULL, NULL, NULL, 0
  FROM pg_index x JOIN rel i ON i.oid = x.indexrelid JOIN rel t ON t.oid = x.indrelid
 WHERE NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid
                   AND k.contype IN ('p', 'u', 'x'))
UNION ALL
SELECT CASE r.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END, '', r.qname, pg_get_viewdef(r.oid),
       NULL, NULL, NULL, 0
  FROM rel r WHERE r.relkind IN ('v', 'm')
UNION ALL
SELECT 'sequence', '', r.qname, concat_ws(chr(31), 'type=' || format_type(s.seqtypid, NULL), 'start=' || s.seqstart,
       'increment=' || s.seqincrement, 'minimum=' || s.seqmin, 'maximum=' || s.seqmax, 'cache=' || s.seqcache,
       'cycle=' || CASE WHEN s.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END), NULL, NULL, NULL, 0
  FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
 WHERE NOT EXISTS (SELECT 1 FROM pg_depend o WHERE o.classid = 'pg_class'::regclass AND o.objid = r.oid
                   AND o.deptype IN ('a', 'i') AND o.refobjsubid > 0)
UNION ALL
SELECT 'trigger', r.qname, g.tgname, pg_get_triggerdef(g.oid), NULL, NULL, NULL, 0
  FROM pg_trigger g JOIN rel r ON r.oid = g.tgrelid WHERE NOT g.tgisinternal
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END, '',
       {_qualified('n', 'p.proname')} || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       {ROUTINE}, NULL, NULL, NULL, 0
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {_USER.format(ns='n')} AND {_not_extension('pg_proc', 'p.oid')}
UNION ALL
SELECT 'type', '', {_qualified('n', 't.typname')},
       CASE t.typtype
         WHEN 'e' THEN 'enum (' || (SELECT string_agg(quote_literal(l.enumlabel), ', ' ORDER BY l.enumsortorder)
                                    FROM pg_enum l WHERE l.enumtypid = t.oid) || ')'
         WHEN 'd' THEN 'domain over ' || format_type(t.typbasetype, t.typtypmod)
                       || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                       || coalesce((SELECT ' ' || string_agg(pg_get_constraintdef(k.oid), ' ' ORDER BY k.conname)
                                    FROM pg_constraint k WHERE k.contypid = t.oid), '')
         WHEN 'r' THEN 'range'
         ELSE 'composite' END, NULL, NULL, NULL, 0
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE {_USER.format(ns='n')} AND {_not_extension('pg_type', 't.oid')}
   AND (t.typtype IN ('e', 'd', 'r')
        OR (t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c')))
ORDER BY 1, 2, 8, 3
"""

_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
#: MATCH SIMPLE is the default, which SQLite's pragma calls NONE: the same foreign key reads the same on both.
_MATCHES = {"s": "NONE", "f": "FULL", "p": "PARTIAL"}
_LABELS = {"p": "primary key", "u": "unique constraint", "c": "check constraint", "x": "exclusion constraint",
           "t": "constraint trigger"}
_PLAIN = {"p": "PRIMARY KEY", "u": "UNIQUE"}


def own_schemas(conn: Any, ledger_schema: str) -> bool:
    """Restrict what this connection's readings read (``OWNED``) to the schemas the member's migrations own;
    return whether the member is a tenant (``PostgresEngine.tenant``), which decides them.

    The functions the readings call on a relation lock it: ``pg_get_viewdef``
    a view and its tables, held to the end of the run's transaction;
    ``pg_relation_size`` for a moment, waiting behind an ACCESS EXCLUSIVE
    holder. Read in every schema, each tenant's run locked the other
    tenants' views and tables, so two tenants' DDL on their same-named
    tables deadlocked, and a session holding one tenant's table held up
    the others' runs. One rule for the run's preview, its lock analysis and
    drift: the same schemas everywhere.
    """
    return bool(conn.execute(_OWN, {"ledger": ledger_schema, "table": TABLE}).fetchone()[0])


def read_schema(conn: Any, ledger_schema: str = "public") -> Schema:
    """The schema of ``conn`` (a psycopg connection): one query, whatever its size; only the schemas the member
    owns on a connection ``own_schemas`` restricted."""
    rows = conn.execute(_QUERY, {"ledger_schema": ledger_schema, "ledger": TABLE, "log": LOG_TABLE}).fetchall()
    options: dict[str, str] = {}
    columns: dict[str, list[Column]] = {}
    keys: dict[str, set[ForeignKey]] = {}
    constraints: dict[str, set[Constraint]] = {}
    named: dict[str, dict[str, str]] = {"index": {}, "trigger": {}, "view": {}}
    others: dict[tuple[str, str], str] = {}
    for kind, table, name, value, a, b, c, _ in rows:
        if kind == "table":
            options[name] = value or ""
        elif kind == "column":
            columns.setdefault(table, []).append(Column(name, value, a == "t", b, 0, 0, c or ""))
        elif kind == "constraint" and value[0] == "f":
            keys.setdefault(table, set()).add(ForeignKey(
                tuple((a or "").split(_SEP)), b or "", tuple((c or "").split(_SEP)),
                _ACTIONS.get(value[1], value[1]), _ACTIONS.get(value[2], value[2]), _MATCHES.get(value[3], value[3])))
        elif kind == "constraint":
            contype, listed = value[0], tuple((a or "").split(_SEP)) if a else ()
            plain = contype in _PLAIN and name == f"{_PLAIN[contype]} ({', '.join(_quoted(c) for c in listed)})"
            constraints.setdefault(table, set()).add(Constraint(
                _LABELS[contype], listed if contype in (*_PLAIN, "c") else (), "" if plain else name,  # type: ignore[arg-type]
                name=c or ""))
        elif kind == "trigger":
            named["trigger"][f"{name} on {table}"] = value
        elif kind == "view":  # said as SQLite keeps a view, so a line reads alike on both engines
            named["view"][name] = f"CREATE VIEW {name} AS {value.strip().rstrip(';')}"
        elif kind in named:
            named[kind][name] = value
        else:
            others[(kind, name)] = value or ""
    tables = {name: Table(name, "", tuple(columns.get(name, ())), None, frozenset(keys.get(name, ())),
                          frozenset(constraints.get(name, ())), kind)
              for name, kind in options.items()}
    return Schema(tables, named["index"], named["trigger"], named["view"], others, ordered_columns=False)


def _quoted(name: str) -> str:
    """How ``pg_get_constraintdef`` prints a column name: bare when it can be, else in double quotes."""
    plain = name.isidentifier() and name == name.lower() and name.isascii()
    return name if plain else '"' + name.replace('"', '""') + '"'
