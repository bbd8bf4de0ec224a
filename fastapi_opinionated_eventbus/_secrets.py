"""Secrets kept out of log lines and error messages: every one goes through here.

A Redis URL may carry a password in its user info (``redis://user:pw@host``) or in its
query string (``?password=pw``, which redis-py honours). :func:`mask_url` replaces both
with ``***``; :func:`scrub` removes the password from any other text (an exception message
that happens to echo it), so nothing that the backend logs or raises can leak it.
:func:`redact` does the same for other secrets (a forwarder's AWS keys, a webhook's HMAC
secret).

Client settings given as a mapping (``kafka_security``) hold secrets under keys such as
``sasl_plain_password``: :func:`mask_mapping` shows such a mapping with those values
replaced, :func:`mapping_secrets` lists them and :func:`redact` removes them from text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

__all__ = [
    "MASK",
    "PublicLocation",
    "is_secret_key",
    "mapping_secrets",
    "mask_mapping",
    "mask_url",
    "public_location",
    "redact",
    "scrub",
    "secrets_of",
    "url_problem",
]

MASK = "***"

# The user info of anything that looks like scheme://userinfo@host: the fallback when a
# URL is too broken for urlsplit, so that even a malformed URL never leaks.
_USERINFO = re.compile(r"(?<=//)[^/@]*@")
_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "ssl_password"})


def _split_userinfo(url: str) -> tuple[str, str | None, str]:
    """``(scheme://, userinfo, rest)``, the user info ending at the *last* ``@``.

    Not urlsplit's reading: a password with an unencoded ``/``, ``?`` or ``#`` would land
    in its path, query or fragment, where masking would miss it. Masking too much (an
    ``@`` in the query) is harmless; too little is not. Without ``://`` (a typo such as
    ``redis:/user:pw@host``, refused as a URL and quoted in the error), whatever stands
    before the last ``@`` is taken as the user info all the same.
    """
    scheme, sep, rest = url.partition("://")
    prefix = f"{scheme}://" if sep else ""
    if not sep:
        rest = url
    if "@" not in rest:
        return prefix, None, rest
    userinfo, _, rest = rest.rpartition("@")
    return prefix, userinfo, rest


def _mask_query(rest: str) -> str:
    head, sep, query = rest.partition("?")
    if not sep:
        return rest
    query, hash_sep, fragment = query.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
        query = urlencode(
            [(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
    return f"{head}?{query}{hash_sep}{fragment}"


def mask_url(url: str) -> str:
    """``url`` with its password (user info or ``?password=``) replaced by ``***``.

    A user name given with a password is kept (it helps to debug ACLs); user info without
    a password is masked whole, since people do write ``redis://<password>@host``.
    Never raises.
    """
    try:
        prefix, userinfo, rest = _split_userinfo(url)
        if userinfo is not None:
            user, sep, _password = userinfo.partition(":")
            prefix += f"{user}:{MASK}@" if sep else f"{MASK}@"
        return prefix + _mask_query(rest)
    except ValueError:
        return _USERINFO.sub(f"{MASK}@", url.split("?", 1)[0])


def secrets_of(url: str) -> tuple[str, ...]:
    """The secret strings in ``url`` (raw and percent-decoded), longest first."""
    found: set[str] = set()
    _, userinfo, rest = _split_userinfo(url)
    if userinfo is not None:
        user, sep, password = userinfo.partition(":")
        found.add(password if sep else user)
    try:
        query = rest.partition("?")[2].partition("#")[0]
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key.lower() in _SECRET_PARAMS:
                found.add(value)
    except ValueError:
        pass
    found |= {unquote(secret) for secret in found}
    # A secret of one or two characters would mask half of every message: such a
    # password is no secret anyway.
    return tuple(sorted((s for s in found if len(s) > 2), key=len, reverse=True))


def scrub(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` replaced by ``***``."""
    return redact(text, secrets_of(url))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (longest first; none under 3 characters, which
    would mask half of every message) replaced by ``***``."""
    for secret in sorted((s for s in set(secrets) if len(s) > 2), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


# A key naming one of these holds a secret: sasl_plain_password, ssl_password,
# sasl_oauth_token_provider, ssl_keyfile, client_secret, api_key, ...
_SECRET_KEY_PARTS = ("password", "secret", "token", "key")


def is_secret_key(key: object) -> bool:
    """Whether a settings key names a secret (it contains password, secret, token, key)."""
    name = str(key).lower()
    return any(part in name for part in _SECRET_KEY_PARTS)


def mask_mapping(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """``mapping`` with the value of every secret key replaced by ``***``."""
    return {str(k): MASK if is_secret_key(k) else v for k, v in mapping.items()}


def mapping_secrets(mapping: Mapping[Any, Any]) -> tuple[str, ...]:
    """The secret values of ``mapping`` as text (for :func:`redact`)."""
    return tuple({str(v) for k, v in mapping.items() if is_secret_key(k) and v})


def url_problem(url: str) -> str | None:
    """What is malformed in a server URL, said without quoting any part of it; None when
    it parses the way clients will read it.

    A password with an unencoded ``/``, ``?``, ``#`` or ``@`` makes a URL parser read part
    of it as the path, query, fragment or host, and the parser's error then quotes that
    part (e.g. "Port could not be cast to integer value as 'TOPSECRET'"): never echo it.
    """
    _, userinfo, _ = _split_userinfo(url)
    if userinfo is not None and any(char in userinfo for char in "/?#@"):
        return (
            "its user info (user name or password) contains an unencoded '/', '?', '#' or "
            "'@': percent-encode the password, e.g. urllib.parse.quote(password, safe='')"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return "its port is not a number between 0 and 65535"
    if parts.scheme != "unix" and not parts.hostname:
        return "it names no host"
    return None


class PublicLocation(NamedTuple):
    """Where a URL points, and nothing that could be a secret."""

    scheme: str
    host: str
    """``host:port`` (IPv6 in brackets); ``localhost`` for a Unix socket."""
    path: str


def public_location(url: str, default_port: int | None = None) -> PublicLocation:
    """The scheme, host, port and path of ``url``: no user info, query or fragment.

    Never raises: a URL too broken to read gives the host ``"unknown"``.
    """
    prefix, _, rest = _split_userinfo(url)  # cut at the last "@", as masking does
    scheme = prefix.removesuffix("://")
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        hostname, port = parts.hostname, parts.port
    except ValueError:
        return PublicLocation(scheme, "unknown", "")
    if not hostname:
        return PublicLocation(scheme, "localhost", parts.path)  # unix:///path/to.sock
    host = f"[{hostname}]" if ":" in hostname else hostname
    port = port if port is not None else default_port
    return PublicLocation(scheme, host if port is None else f"{host}:{port}", parts.path)
