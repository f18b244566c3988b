"""Connection URLs: what they may be, and how they are shown. A password never leaves the
process: every log line, artifact, table row and error shows :func:`redact`'s form."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SERVING_SCHEMES = ("sqlite", "postgresql", "postgres")


def redact(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; a URL without
    a password, or that is not a URL, comes back unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def check_serving_url(url: str) -> str:
    """The serving URL if its scheme is one the serving store speaks.

    Raises:
        ValueError: naming the (redacted) URL and what was expected.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SERVING_SCHEMES or (scheme == "sqlite" and not url.startswith("sqlite:///")):
        raise ValueError(
            f"{redact(url)!r}: expected sqlite:///<absolute path> or postgresql://<host>/<db>"
        )
    return url
