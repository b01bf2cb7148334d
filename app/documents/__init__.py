"""Medical documents (DESIGN §4): what a patient uploads and the doctors read.

Files live outside static/ under random keys in the file store (app/storage.py), carry the
SHA-256 of the bytes stored, are recognised by content rather than by extension, and are only
ever served by an authorised view (views/documents.py, through views.common.file_download). The
original, often Cyrillic, file name is metadata only. The area by responsibility:

- checks.py  what we accept: magic bytes and a real parser, DICOM preamble neutralised,
             write_file() (a checked stream into the file store; the conclusion PDF uses it too);
- upload.py  a patient's upload: names, dates, note, quota (app/quotas.py), the row, the audit;
- access.py  scope-checked reading (pages, one document, the DICOM summary), deletion, JSON;
- demo.py    demo documents, stored through the upload path.

Services take the acting user explicitly and never commit: the view's unit of work does. A
stored file is tied to the transaction that records it (storage.on_rollback / on_commit).
"""

from __future__ import annotations

from app.errors import DomainError


class DocumentError(DomainError):
    """The upload or the action on a document was refused; str() is shown to the user."""
