"""`flask oblako verify-storage`: does every stored file match its row, and every file a row?

For every medical document, conclusion PDF and recording row: its file exists and its SHA-256
is the one recorded (a conclusion issued before migration 0015 and a recording without a hash
are only checked to exist, and counted as unhashed). Then every file in the stores' fan-out
that no row names is listed (the periodic sweep moves such files aside after an hour; here
they are only reported). Read-only: it never moves, deletes or rewrites anything.

Run it after restoring a backup, and from time to time on the live service: a report names
tables, public ids and storage keys, never a patient or a file's original name.
Memory stays flat: rows are read in batches, files are checked against the rows in batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from app.extensions import db
from app.recordings import recordings_root
from app.storage import referenced_keys, storage_root, stored_files
from models import STORAGE_KEY_RE, Conclusion, MedicalDocument, Recording, stored_file_path

BATCH = 500
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Problem:
    kind: str  # missing | altered | unreferenced
    table: str  # medical_document | conclusion | recording | "" (a file without a row)
    public_id: str
    key: str

    def __str__(self) -> str:
        if self.kind == "unreferenced":
            return f"unreferenced  {self.key}  (no row points to this file)"
        return f"{self.kind:<12}  {self.table} {self.public_id}  key {self.key}"


@dataclass
class StorageReport:
    checked: int = 0
    unhashed: int = 0
    files: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _rows() -> Iterator[tuple[str, str, str, str | None, Path]]:
    """(table, public id, key, recorded hash or None, root) of every stored file's row."""
    documents, recordings = storage_root(), recordings_root()
    sources = (
        ("medical_document", MedicalDocument.storage_key, MedicalDocument.sha256, documents),
        ("conclusion", Conclusion.pdf_storage_key, Conclusion.pdf_sha256, documents),
        ("recording", Recording.storage_key, Recording.sha256, recordings),
    )
    for table, key_column, hash_column, root in sources:
        model = key_column.class_
        stmt = (
            select(model.public_id, key_column, hash_column)
            .where(key_column.is_not(None))
            .order_by(model.id)
            .execution_options(yield_per=BATCH)
        )
        for public_id, key, sha in db.session.execute(stmt):
            yield table, str(public_id), key, (sha or None), root


def verify_storage() -> StorageReport:
    report = StorageReport()
    for table, public_id, key, recorded, root in _rows():
        report.checked += 1
        try:
            path = stored_file_path(root, key)
        except ValueError:
            report.problems.append(Problem("missing", table, public_id, key))
            continue
        if not path.is_file():
            report.problems.append(Problem("missing", table, public_id, key))
        elif recorded is None:
            report.unhashed += 1
        elif sha256_of(path) != recorded:
            report.problems.append(Problem("altered", table, public_id, key))
    roots = [storage_root(), recordings_root()]
    for i, root in enumerate(roots):
        if root in roots[:i] or not root.is_dir():
            continue
        batch: list[str] = []
        for path in stored_files(root):
            if not STORAGE_KEY_RE.fullmatch(path.name):
                continue  # a temp file of an upload or recording in flight
            report.files += 1
            batch.append(path.name)
            if len(batch) >= BATCH:
                _unreferenced(batch, report)
                batch = []
        _unreferenced(batch, report)
    db.session.rollback()  # read-only: end the transaction the reads opened
    return report


def _unreferenced(keys: list[str], report: StorageReport) -> None:
    if not keys:
        return
    known = referenced_keys(keys)
    report.problems.extend(Problem("unreferenced", "", "", k) for k in keys if k not in known)
