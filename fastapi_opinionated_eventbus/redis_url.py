"""Redis URLs without their secrets: every log line and error message goes through here.

A Redis URL may carry a password in its user info (``redis://user:pw@host``) or in its
query string (``?password=pw``, which redis-py honours). :func:`mask_url` replaces both
with ``***``; :func:`scrub` removes the password from any other text (an exception message
that happens to echo it), so nothing that the backend logs or raises can leak it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["MASK", "mask_url", "scrub", "secrets_of"]

MASK = "***"

# The user info of anything that looks like scheme://userinfo@host: the fallback when a
# URL is too broken for urlsplit, so that even a malformed URL never leaks.
_USERINFO = re.compile(r"(?<=//)[^/@]*@")
_SECRET_PARAMS = frozenset({"password", "pass", "pwd"})


def mask_url(url: str) -> str:
    """``url`` with its password (user info or ``?password=``) replaced by ``***``.

    A user name given with a password is kept (it helps to debug ACLs); user info without
    a password is masked whole, since people do write ``redis://<password>@host``.
    Never raises: a URL it cannot parse has everything before its ``@`` masked.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}:{MASK}@{hostinfo}" if sep else f"{MASK}@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
                query = urlencode(
                    [(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs],
                    safe="*",
                )
        if "://" not in url:
            return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
        # Rebuilt by hand: urlunsplit drops the empty authority of unix:///path.
        masked = f"{parts.scheme}://{netloc}{parts.path}"
        return (
            masked
            + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else "")
        )
    except ValueError:
        return _USERINFO.sub(f"{MASK}@", url.split("?", 1)[0])


def secrets_of(url: str) -> tuple[str, ...]:
    """The secret strings in ``url`` (raw and percent-decoded), longest first."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        if "@" in parts.netloc:
            userinfo = parts.netloc.rpartition("@")[0]
            user, sep, password = userinfo.partition(":")
            found.add(password if sep else user)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() in _SECRET_PARAMS:
                found.add(value)
    except ValueError:
        match = _USERINFO.search(url)
        if match:
            found.add(match.group(0)[:-1])
    found |= {unquote(secret) for secret in found}
    # A secret of one or two characters would mask half of every message: such a
    # password is no secret anyway.
    return tuple(sorted((s for s in found if len(s) > 2), key=len, reverse=True))


def scrub(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` replaced by ``***``."""
    for secret in secrets_of(url):
        text = text.replace(secret, MASK)
    return text
