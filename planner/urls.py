"""Telling a PostgreSQL connection string from a SQLite path, and hiding its password.

``--db`` takes either. A URL (``postgresql://`` or ``postgres://``) or
libpq's keyword form (``host=/run/postgresql dbname=apm``) means
PostgreSQL; anything else is a file path. A connection string may carry a
password, and every message, log line and backup file name that shows one
goes through ``redact`` first.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, unquote, urlsplit

_SCHEMES = ("postgresql://", "postgres://")
# libpq's "key=value key=value" form: starts with a known keyword followed by '='.
_KEYWORD_FORM = re.compile(r"^\s*(host|hostaddr|dbname|user|port|service|password|sslmode)\s*=", re.I)

# Where a URL's user info may start in a text (a message may quote one), whatever the scheme: a misspelled one
# (``postgresq://app:pw@/db``) still carries the password.
_URL_START = re.compile(r"://")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.I)
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)

MASK = "***"

#: How the library names a database to a person: a file's path as given, or a connection string with its
#: password masked (``shown``). Errors, findings, events and fleet rows hold this, never a ``Path`` or a raw URL,
#: so no password can reach a message, a log or a file name through them.
DatabaseName = str


def is_postgres(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than a SQLite file.

    The scheme is matched as libpq matches it, in lower case: ``Postgresql://``
    is no URL to libpq, so it is reported as a misspelled one (``misspelled_url``).
    """
    text = str(db)
    return text.startswith(_SCHEMES) or _KEYWORD_FORM.match(text) is not None


_SCHEME_LIKE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):/")


def misspelled_url(db: str) -> str | None:
    """What ``db`` looks like when it looks like a URL but is not PostgreSQL's: a typo, never a file name.

    ``postgresq://app:pw@/appdb`` must not become a SQLite file of that name
    (migrated, backed up, its password in every path printed). ``None`` when
    ``db`` is PostgreSQL's or plainly a path. Only the scheme is returned, so
    a message quoting it shows no password.
    """
    text = str(db)
    if is_postgres(text):
        return None
    match = _SCHEME_LIKE.match(text)
    if match and not (len(match.group(1)) == 1 and text.lstrip()[1:3] in (":/", ":\\")):  # C:/ is a drive
        return match.group(1) + ":"
    if text.lstrip().lower().startswith("postgres"):
        return text.lstrip()[:len("postgresql")].rstrip(":/") + "..."
    return None


def _passwords(text: str) -> list[tuple[int, int]]:
    """Where the password of each URL in ``text`` is: after ``scheme://user:``, up to the LAST '@' of the user info.

    A password a person forgot to percent-encode (``app:Zq?Secret/x@host``, ``app:Zq@Secret9@host``) makes a URL
    libpq refuses or misreads, and it must be masked all the same: so a '#', '?', '/' or '@' is the password's up
    to the last '@' that the host part could follow (one with no '/' or '?' between it and the '@' before it).
    A URL with no user before a ':' (``postgresql://host:5432/db``) has no password.
    """
    spans = []
    for start in _URL_START.finditer(text):
        begin = start.end()
        at = text.find("@", begin)
        colon = text.find(":", begin, at) if at >= 0 else -1
        if colon < 0 or any(c in text[begin:colon] for c in "/?#@ "):
            continue
        end = at
        while (following := text.find("@", end + 1)) >= 0 and not any(c in text[end + 1:following] for c in "/? "):
            end = following
        spans.append((colon + 1, end))
    return spans


def unencoded_password(db: str) -> str | None:
    """The characters of a URL's password that libpq cannot read raw (a '/' or '@'), as the advice to
    percent-encode them says; ``None`` when the password (if any) can be read as written."""
    text = str(db)
    for begin, end in _passwords(text) if text.lower().startswith(_SCHEMES) else ():
        bad = [c for c in "/@" if c in text[begin:end]]
        # ``host:5432/db?user=a@b``: a port, and an '@' in the query; masked to be safe, yet a URL libpq reads.
        if bad and not re.match(r"\d+/", text[begin:end]):
            return " and ".join(f"'{c}' (write it {quote(c, safe='')})" for c in bad)
    return None


def _masked_passwords(text: str, replacement: str = MASK) -> str:
    """``text`` with each URL's password (``_passwords``) replaced."""
    for begin, end in reversed(_passwords(text)):
        text = text[:begin] + replacement + text[end:]
    return text


def redact(db: str) -> str:
    """``db`` with any password replaced by ``***`` (URL user info, ``?password=``, ``password=``)."""
    text = _masked_passwords(str(db))
    text = _QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    if not text.lower().startswith(_SCHEMES):
        text = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    return text


#: What may follow the last '#' as a tenant schema: nothing a connection string's value could go on with.
_SCHEMA = re.compile(r"^[^\s=@/:?&'\"\\%#]+$")
#: libpq's keyword form ending in an unquoted password value: a '#' after it is the password's.
_ENDS_IN_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*[^'\s]*$", re.I)


def split_schema(url: str) -> tuple[str, str | None]:
    """``postgresql://h/db#tenant1`` as ``(postgresql://h/db, "tenant1")``; no fragment, no schema.

    Only what follows the last '#' and could be nothing but a schema name is one: a '#' inside a value is the
    value's, as libpq reads it (a URL's password ``app:a#b@host``; ``password=a#b``, anywhere in the keyword
    form, which has no fragment). In a URL's query a '#' ends it (RFC 3986): ``?password=a%23b#t`` is password
    ``a#b`` of tenant ``t``.
    """
    base, hash_, fragment = url.rpartition("#")
    if not hash_:
        return url, None
    fragment = fragment.strip()
    if not fragment:
        return base, None
    if not _SCHEMA.match(fragment) or not base.lower().startswith(_SCHEMES) and _ENDS_IN_PASSWORD.search(base):
        return url, None
    return base, fragment


def _tenant_option(url: str, schema: str) -> str:
    """What ``tenant_url`` adds to ``url`` for ``schema``: a query parameter, or a keyword (libpq's two forms)."""
    # The server folds an unquoted name to lower case: a tenant "MixedCase" or "Tenant-A" is named quoted.
    if not re.fullmatch(r"[a-z_][a-z0-9_$]*", schema):
        schema = '"' + schema.replace('"', '""') + '"'
    if url.lower().startswith(_SCHEMES):
        return "options=" + quote(f"-csearch_path={schema}", safe="")
    return f" options='-csearch_path={schema}'"


def tenant_url(url: str, schema: str) -> str:
    """``url`` connecting with ``search_path`` set to ``schema`` (libpq's ``options=-csearch_path=...``).

    Migrations name their tables without a schema, so a tenant's tables land
    in the tenant's schema only if the connection looks there first. Joined
    as text, not by ``urlunsplit``, which turns ``postgresql:///db`` (no host:
    the default socket) into ``postgresql:/db``, a URL libpq refuses.
    """
    option = _tenant_option(url, schema)
    if url.lower().startswith(_SCHEMES):
        return url + ("&" if "?" in url else "?") + option
    return url + option


def display_name(url: str, schema: str | None = None) -> DatabaseName:
    """How every output names the database ``url`` reaches, the same for every command: the password masked,
    and a tenant (``url`` as ``tenant_url`` made it for ``schema``, its ledger's) as ``apm fleet`` lists it,
    ``url#schema``, not with the ``options=-csearch_path=...`` the connection needs."""
    if schema is not None:  # ``#public`` too: shown as given, never as the option the connection needs
        option = _tenant_option(url, schema)
        if url.lower().startswith(_SCHEMES):
            base, _, query = url.partition("?")
            params = [p for p in query.split("&") if p]
            kept = [p for p in params if unquote(p) != unquote(option)]
            if len(kept) < len(params):
                url = base + ("?" + "&".join(kept) if kept else "") + "#" + schema
        elif url.endswith(option):
            url = url[:-len(option)] + "#" + schema
    return redact(url)


def shown(db: object) -> DatabaseName:
    """``db`` (a path, a URL, libpq's keyword form) as a message names it: its password masked, if it has one.

    Masking whatever looks like a password, not only a URL's, covers a misspelled scheme too
    (``postgresq://app:pw@/db``), which is a path to ``is_postgres`` but still carries the password.
    """
    return redact(str(db))


def without_password(db: str) -> str:
    """``db`` with any password left out: for a command a person may paste, where libpq then finds the
    password where it always looks (``PGPASSWORD``, ``~/.pgpass``) instead of the screen or a log."""
    text = str(db)
    if text.lower().startswith(_SCHEMES):
        parts = urlsplit(_user_only(text))  # the password first: it may hold a '#' or a '?'
        query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
        # As text, not by urlunsplit, which turns ``postgresql:///db`` (no host) into ``postgresql:/db``.
        return (text[:text.index("://") + 3] + parts.netloc + parts.path + (f"?{query}" if query else "")
                + (f"#{parts.fragment}" if parts.fragment else ""))
    return " ".join(_KEYWORD_PASSWORD.sub("", text).split())


def _user_only(url: str) -> str:
    """``url`` with its user info without its password: ``app@``, or nothing when it names no user."""
    spans = _passwords(url)[:1]
    for begin, end in spans:  # the ':' before the password goes too, and the '@' when no user is left
        url = url[:begin - 1] + (url[end:] if url[begin - 2] != "/" else url[end + 1:])
    return url


def database_name(db: str) -> str:
    """The database a connection string names, read from its text alone (``database_of`` asks libpq's rules,
    service files and the environment too); ``postgres`` when it names none. A URL's ``?dbname=`` wins over
    its path, as in libpq and ``connection_identity``."""
    text = str(db)
    if text.lower().startswith(_SCHEMES):
        parts = urlsplit(_user_only(text))  # a '#' of the password is no fragment
        name = parse_qs(parts.query).get("dbname", [""])[0] or unquote(parts.path.lstrip("/"))
        return name or unquote(parts.username or "") or "postgres"
    match = re.search(r"\bdbname\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", text)
    if match:
        return match.group(1).strip("'")
    match = re.search(r"\buser\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", text)
    return match.group(1).strip("'") if match else "postgres"


_KEYWORD = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")
#: The settings that decide which database a connection reaches (not how: sslmode, timeouts, a password).
_WHERE = ("host", "hostaddr", "port", "dbname", "user", "service", "options")


def connection_identity(db: str) -> tuple[str, ...] | None:
    """Which database ``db`` reaches, the same for every spelling of it: ``postgres://`` or ``postgresql://``,
    libpq's keyword form, its parameters in any order, with or without a password. ``None`` for a path.

    Only what the text says is compared (a port left out is not taken to be 5432: the environment may say
    otherwise), so two spellings are one database only when they surely are; the query's ``dbname`` wins over
    the path's, as libpq reads it.
    """
    text = str(db).strip()
    if text.lower().startswith(_SCHEMES):
        parts = urlsplit(_user_only(text))
        user, _, hosts = parts.netloc.rpartition("@")
        host, port = hosts, ""
        if "," not in hosts and re.fullmatch(r".*:\d*", hosts) and not hosts.endswith("]"):
            host, _, port = hosts.rpartition(":")
        host = unquote(host)  # a socket folder's case is its own; a host name's is not
        values = {"host": host if host.startswith("/") else host.lower(), "port": port, "user": unquote(user),
                  "dbname": unquote(parts.path.lstrip("/"))}
        values.update({key.lower(): found[-1] for key, found in parse_qs(parts.query).items()})
    elif is_postgres(text):
        values = {key.lower(): value[1:-1].replace("\\'", "'") if value.startswith("'") else value
                  for key, value in _KEYWORD.findall(text)}
    else:
        return None
    values["dbname"] = values.get("dbname") or values.get("user", "")
    return tuple(values.get(key, "") for key in _WHERE)
