"""Whether an HTTP answer can come from the API that was asked (Nomad's, Consul's), or from something else at that
address: a web server, a login page, another service. Pure: status, content type and path in, a reason out.

A wrong `NOMAD_ADDR` that reaches some other server must say so in one line, not print that server's page.
"""

from __future__ import annotations

from collections.abc import Callable


def content_kind(content_type: str) -> str:
    """The media type of a Content-Type header, lower-case and without parameters (`text/html`)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_html(content_type: str) -> bool:
    return content_kind(content_type) in ("text/html", "application/xhtml+xml")


def foreign_answer(
    status: int,
    content_type: str,
    path: str,
    *,
    json_expected: bool = True,
    never_missing: Callable[[str], bool] = lambda path: False,
) -> str | None:
    """Why this answer cannot come from the API (`404 on /v1/jobs`), or None when it can.

    Neither Nomad nor Consul answers with an HTML page; neither answers 404 on a path that always exists
    (`never_missing`); a successful answer where JSON is expected is JSON, and never a redirect. 5xx answers
    are left alone: a proxy's error page while the API behind it restarts is an outage, not a wrong address.
    """
    if status >= 500:
        return None
    kind = content_kind(content_type)
    if is_html(content_type):
        return f"{status} {kind} on {path}"
    if status == 404 and never_missing(path):
        return f"404 on {path}"
    if status < 400 and json_expected and kind != "application/json":
        return f"{status} {kind or 'without a content type'} on {path}"
    return None


def html_page(content_type: str, body: str) -> bool:
    """Whether an answer is a web page (a proxy's error page), whose text must not be printed as a message."""
    return is_html(content_type) or body.lstrip()[:15].lower().startswith(("<!doctype html", "<html"))
