"""Helpers shared by the views (DESIGN §3: views never import other views).

Downloads: every file the service hands out (a medical document, a conclusion PDF, a recording,
the referral template and import report, a report export) goes through `download()`, so each
carries the same headers (DESIGN §4): Content-Disposition with an ASCII fallback and the exact
UTF-8 (often Cyrillic) name, nosniff, no-store, and a sandboxing Content-Security-Policy. An
inline preview keeps its own, looser policy and may be framed by our pages only.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from flask import Response, send_file

# A downloaded file is a document of its own: no script, no plugin, no navigation.
DOWNLOAD_CSP = "sandbox; default-src 'none'"


def content_disposition(filename: str, *, inline: bool = False) -> str:
    """RFC 6266 / 5987: an ASCII fallback for old clients plus the exact UTF-8 name."""
    stem, ext = os.path.splitext(filename)

    def ascii_only(text: str, allowed: str) -> str:
        folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
        return re.sub(allowed, "_", folded).strip(" ._")

    ascii_stem = ascii_only(stem, r"[^A-Za-z0-9._() -]")
    if not re.search(r"[A-Za-z0-9]", ascii_stem):
        ascii_stem = "document"  # a Cyrillic name folds to nothing useful
    ascii_ext = ascii_only(ext, r"[^A-Za-z0-9]")
    ascii_name = f"{ascii_stem}.{ascii_ext}" if ascii_ext else ascii_stem
    disposition = "inline" if inline else "attachment"
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def download_headers(filename: str, *, inline_csp: str | None = None) -> dict[str, str]:
    """The headers of a served file; `inline_csp` makes it an inline preview with that policy."""
    inline = inline_csp is not None
    headers = {
        "Content-Disposition": content_disposition(filename, inline=inline),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "Content-Security-Policy": inline_csp if inline else DOWNLOAD_CSP,
    }
    if inline:
        headers["X-Frame-Options"] = "SAMEORIGIN"  # pages elsewhere get DENY
    return headers


def download(
    content: Path | bytes | Iterable[bytes],
    *,
    filename: str,
    mimetype: str,
    inline_csp: str | None = None,
    length: int | None = None,
) -> Response:
    """A file for the browser: from a path (with Range requests, so PDF viewers, <video> and
    large DICOM downloads resume), from bytes, or streamed from chunks (give `length`)."""
    if isinstance(content, Path):
        response = send_file(
            content,
            mimetype=mimetype,
            conditional=True,
            etag=False,
            last_modified=None,
            max_age=None,
        )
    else:
        response = Response(content, mimetype=mimetype)
        if length is not None:
            response.headers["Content-Length"] = str(length)
    response.headers.update(download_headers(filename, inline_csp=inline_csp))
    return response
