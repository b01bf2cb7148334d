"""Which files we accept, and writing one into the file store.

A file is recognised by its bytes (magic numbers), then proven by the format's own parser
(pypdf, Pillow with decompression bombs refused, pydicom); the extension is only a cheap first
filter on the name. A DICOM file is stored with its 128-byte preamble zeroed (neutralise_head).
write_file() streams, checks and stores a file atomically (app/storage.py); the conclusion PDFs
go through it too.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from flask_uploads import UploadSet
from flask_uploads.flask_uploads import UploadConfiguration

from app import storage
from app.documents import DocumentError

CHUNK = 64 * 1024


# ---------------------------------------------------------------------------------------------
# What we accept
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    code: str
    content_type: str
    extension: str  # the canonical one, used to fix a download name that lies
    extensions: tuple[str, ...]
    inline: bool  # a browser can show it in the page


PDF = Kind("pdf", "application/pdf", "pdf", ("pdf",), True)
JPEG = Kind("jpeg", "image/jpeg", "jpg", ("jpg", "jpeg"), True)
PNG = Kind("png", "image/png", "png", ("png",), True)
DICOM = Kind("dicom", "application/dicom", "dcm", ("dcm", "dicom"), False)
KINDS = (PDF, JPEG, PNG, DICOM)
KIND_BY_CONTENT_TYPE = {k.content_type: k for k in KINDS}

# Flask-Reuploaded as the first, cheap filter on the name only. Its own save() is never used
# (DESIGN §5: it strips Cyrillic names and leaves 0-byte files), nor configure_uploads(), which
# would mount a public route serving the upload folder. A fixed configuration with empty
# allow/deny lists keeps it from looking for one on the app.
EXTENSIONS = ("pdf", "jpg", "jpeg", "png", "dcm")
documents_upload_set = UploadSet("documents", extensions=EXTENSIONS)
documents_upload_set._config = UploadConfiguration(destination=os.devnull)

TYPE_REFUSED = _l("Only PDF, JPEG, PNG and DICOM files can be uploaded.")

# What a file picker offers (`accept`): the names and types above; a phone's camera: a photo.
ACCEPT = ",".join([f".{e}" for e in EXTENSIONS] + [k.content_type for k in KINDS])
CAMERA_ACCEPT = ",".join(k.content_type for k in (JPEG, PNG))


def extension_acceptable(filename: str) -> bool:
    """Name-level pre-check. DICOM files from a CD usually have no extension at all
    (IM000001), so a name without an extension is left to the content check."""
    ext = os.path.splitext(filename)[1].lstrip(".").lower()
    return not ext or documents_upload_set.extension_allowed(ext)


# ---------------------------------------------------------------------------------------------
# Content checks: magic bytes first, then the real parser
# ---------------------------------------------------------------------------------------------


def _check_pdf(path: Path) -> None:
    from pypdf import PdfReader

    damaged = DocumentError(_l("The file is damaged or is not a real PDF document."))
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - 2048))
        if b"%%EOF" not in fh.read():
            raise damaged
    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(
                _l("The PDF is protected with a password: save it without the password.")
            )
        if len(reader.pages) < 1:
            raise damaged
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many unrelated types on garbage
        raise damaged from exc


def _check_image(path: Path, expected_format: str) -> None:
    from PIL import Image

    damaged = DocumentError(_l("The file is damaged or is not a real JPEG or PNG image."))
    try:
        with warnings.catch_warnings():
            # A decompression bomb is refused, not merely warned about.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format != expected_format or not all(image.size):
                    raise damaged
                image.verify()
    except DocumentError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DocumentError(_l("The image is too large to process.")) from exc
    except Exception as exc:
        raise damaged from exc


def _check_dicom(path: Path) -> None:
    import pydicom

    try:
        dataset = pydicom.dcmread(str(path), stop_before_pixels=True)
        if "TransferSyntaxUID" not in dataset.file_meta:
            raise ValueError("no transfer syntax")
    except Exception as exc:
        raise DocumentError(_l("The file is damaged or is not a real DICOM file.")) from exc


def detect_kind(path: Path) -> Kind:
    """Recognise the file by its bytes, then prove it with the format's parser."""
    with path.open("rb") as fh:
        head = fh.read(132)
    if head.startswith(b"%PDF-"):
        _check_pdf(path)
        return PDF
    if head.startswith(b"\xff\xd8\xff"):
        _check_image(path, "JPEG")
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        _check_image(path, "PNG")
        return PNG
    if len(head) == 132 and head[128:132] == b"DICM":
        _check_dicom(path)
        return DICOM
    raise DocumentError(TYPE_REFUSED)


# ---------------------------------------------------------------------------------------------
# Writing into the file store (app/storage.py)
# ---------------------------------------------------------------------------------------------

DICOM_HEAD = 132  # the 128-byte preamble, then "DICM"
OTHER_MAGICS = (b"%PDF-", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


@dataclass(frozen=True)
class StoredFile:
    key: str
    path: Path
    size: int
    sha256: str
    kind: Kind


def _read_head(stream: BinaryIO, n: int) -> bytes:
    head = b""
    while len(head) < n and (chunk := stream.read(n - len(head))):
        head += chunk
    return head


def neutralise_head(head: bytes) -> bytes:
    """A DICOM file's 128-byte preamble is free for the application, so a Windows executable
    or an HTML page can hide there in a valid file ("PE-DICOM", CVE-2019-11687): it is stored
    as zeros, which DICOM readers ignore. A file that starts as a PDF or an image is that."""
    if head[128:DICOM_HEAD] == b"DICM" and not head.startswith(OTHER_MAGICS):
        return bytes(128) + head[128:]
    return head


def _chunks(stream: BinaryIO, max_bytes: int) -> Iterator[bytes]:
    size = 0
    head = neutralise_head(_read_head(stream, DICOM_HEAD))
    for chunk in itertools.chain([head], iter(lambda: stream.read(CHUNK), b"")):
        size += len(chunk)
        if size > max_bytes:
            raise DocumentError(too_large_message(max_bytes))
        yield chunk


def _check_stored(path: Path, size: int) -> Kind:
    if size == 0:
        raise DocumentError(_l("The file is empty."))
    return detect_kind(path)


def write_file(stream: BinaryIO, *, max_bytes: int) -> StoredFile:
    """Stream, check by content and store a file; its SHA-256 is of the bytes stored."""
    written, kind = storage.write_atomically(_chunks(stream, max_bytes), check=_check_stored)
    return StoredFile(written.key, written.path, written.size, written.sha256, kind)


def too_large_message(max_bytes: int) -> LazyString:
    # Same msgid as the 413 handler, so both paths say the same thing.
    limit_mb = max(1, math.ceil(max_bytes / 2**20))
    return _l("The file is too large: the limit is %(n)d MB.", n=limit_mb)
