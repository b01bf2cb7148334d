"""What views share: the one module a view imports from views/ (views never import each other).

Request helpers (every area):
- unit_of_work(): the view's transaction, carrying the request's client address to the audit
  trail (services never read the request: DESIGN §3).
- REQUIRED / attach_error(): the required-field message and a service error shown on its field.
- current_patient(): the signed-in patient's record, else 404.
- endpoint_url(): the URL of an area's view that may not be registered.
- sign_in_url(): the sign-in address a message carries (configured, else this site's).
- type_label() / human_size(): a document type and a file size in the viewer's words.

Downloads: every file the service hands out (a medical document, a conclusion PDF, a recording,
the referral template and import report, a report export) goes through `download()`, so each
carries the same headers (DESIGN §4): Content-Disposition with an ASCII fallback and the exact
UTF-8 (often Cyrillic) name, nosniff, no-store, and a sandboxing Content-Security-Policy. An
inline preview keeps its own, looser policy and may be framed by our pages only.

The generated staff screens (views/staff.py, scheduling.py, reference.py): FAB's ModelView
gives list/show/add/edit/delete; what it does not give on its own, and what every staff screen
here needs:

- StaffModelView: no actions, no mass operations, no file download — those routes of FAB
  (`action`, `action_post`, `download`) fetch rows without `base_filters` (DESIGN §4), so they
  are not registered at all.
- RowScope: a base filter evaluated per request for the signed-in user (FAB's base_filters are
  class-level and static otherwise).
- StaffInterface: joins the many-to-one relations a list shows, so a list page costs the
  same number of queries for 5 rows and for 500 (FAB 5.3's ModelView list passes no
  select_columns to the interface, so related columns would load one row at a time).
- LocalDateTimeField: date-time inputs in the viewer's time zone, stored as UTC.
- FilterTypedNumber: a consultation found by its number typed as people type it.
- checkbox_field / optional_text_field: FAB puts InputRequired on every NOT NULL column, so an
  unticked checkbox or an empty "" text column could never be saved through its generated form.
- yes_no / joined: show booleans and to-many relations as words, not True or a Python repr.
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote
from zoneinfo import ZoneInfo

from dateutil import parser as date_parser
from flask import Response, abort, current_app, flash, g, request, send_file, url_for
from flask_appbuilder import ModelView
from flask_appbuilder.fieldwidgets import (
    BS3TextAreaFieldWidget,
    BS3TextFieldWidget,
    DateTimePickerWidget,
)
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.filters import (
    FilterEqual,
    FilterGreater,
    FilterNotEqual,
    FilterSmaller,
    SQLAFilterConverter,
    get_field_setup_query,
)
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from markupsafe import Markup
from sqlalchemy import ColumnElement, Uuid, false, select
from sqlalchemy.orm import joinedload
from wtforms import BooleanField, DateTimeField, StringField, TextAreaField
from wtforms.validators import Length, Optional
from wtforms.widgets import html_params

from app import consultations as svc
from app import db as transactions
from app.accounts import patient_for_user, public_sign_in_url
from app.dates import format_in_zone, zone_label
from app.documents import access as docs
from app.documents.upload import store_document
from app.errors import DomainError
from app.extensions import db
from app.i18n import viewer_timezone
from app.labels import PATIENT_KIND_LABELS, PATIENT_STATUS_LABELS
from app.security import client_ip
from models import (
    Consultation,
    DocumentType,
    MedicalDocument,
    Patient,
    typed_consultation_number,
)

DATETIME_FORMAT = "%Y-%m-%d %H:%M"
REQUIRED = _l("This field is required.")


# ---------------------------------------------------------------------------------------------
# Request helpers
# ---------------------------------------------------------------------------------------------


def unit_of_work():
    """app.db.unit_of_work() for this request: its audit events carry the client's address."""
    return transactions.unit_of_work(client_ip=client_ip())


def attach_error(form: FlaskForm, exc: DomainError) -> None:
    """Show the service's message next to its field, or above the form when it has none."""
    name = getattr(exc, "field", None)
    field = getattr(form, name, None) if name else None
    if field is not None:
        field.errors = [*field.errors, str(exc)]
    else:
        flash(str(exc), "danger")


def current_patient() -> Patient:
    """The signed-in user's patient record; staff (even Admin) have none and get 404."""
    patient = patient_for_user(g.user)
    if patient is None:
        abort(404)
    return patient


def endpoint_url(endpoint: str, **values: Any) -> str | None:
    """URL of a view that may not be registered (another area's, switched off), else None."""
    if endpoint not in current_app.view_functions:
        return None
    return url_for(endpoint, **values)


def sign_in_url() -> str:
    """The sign-in address sent by SMS, from this request's site (app.accounts has the rule)."""
    return public_sign_in_url(request.url_root)


def type_label(document_type: DocumentType) -> str:
    locale = get_locale()
    if locale is not None and locale.language == "en" and document_type.name_en:
        return document_type.name_en
    return document_type.name


def human_size(size: int) -> str:
    if size < 1024:
        return _("%(n)d B", n=size)
    if size < 1024 * 1024:
        return _("%(n).1f KB", n=size / 1024)
    return _("%(n).1f MB", n=size / 1024 / 1024)


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Generated staff screens
# ---------------------------------------------------------------------------------------------

ScopeFunction = Callable[[Any], ColumnElement[bool]]


class RowScope(BaseFilter):
    """Base filter whose value is a function user → SQL condition, applied for g.user.

    Used as `base_filters = [["id", RowScope, some_condition]]`. FAB applies base filters to
    list, show, edit and delete (`datamodel.get(pk, self._base_filters)` answers None → 404).
    No `arg_name`: it can never be chosen from the URL or the REST filter syntax.
    """

    name = "Row scope"

    def apply(self, query, value: ScopeFunction):
        return query.filter(value(g.user))


def _aware(value: Any) -> datetime | None:
    """A searched date and time, typed in the viewer's zone, as aware UTC (the UTC columns
    refuse a naive one); what does not parse filters on nothing, as in FAB."""
    if isinstance(value, str):
        try:
            value = date_parser.parse(value)
        except (ValueError, OverflowError, TypeError):
            return None
    if isinstance(value, datetime) and value.tzinfo is None:
        try:
            value = value.replace(tzinfo=ZoneInfo(viewer_timezone())).astimezone(UTC)
        except OverflowError:
            return None
    return value if isinstance(value, datetime) else None


def _local_time(filter_class: type[BaseFilter]) -> type[BaseFilter]:
    def apply(self, query, value):
        return filter_class.apply(self, query, _aware(value))

    # No arg_name: FAB would register the class as the REST API's filter for every model.
    attrs = {"apply": apply, "arg_name": None}
    return type(f"Local{filter_class.__name__}", (filter_class,), attrs)


_LOCAL_TIME_FILTERS = [
    _local_time(f) for f in (FilterEqual, FilterGreater, FilterSmaller, FilterNotEqual)
]


class FilterTypedNumber(BaseFilter):
    """The consultation number as a person types it, read over the phone: '26-42',
    '№ 26-042' and '2642' all find consultation 26-42; anything else finds nothing."""

    name = _l("Equal to")
    arg_name = None  # not a REST API filter (see _local_time)

    def apply(self, query, value):
        query, field = get_field_setup_query(query, self.model, self.column_name)
        digits = typed_consultation_number(value if isinstance(value, str) else None)
        return query.filter(field == digits if digits else false())


class _StaffFilterConverter(SQLAFilterConverter):
    # Uuid columns (public_id) get no filters at all: FAB cannot parse them from a search or
    # URL filter (DESIGN §5), and without this entry it logs a warning on every request.
    # Date-time searches are read in the viewer's zone (FAB would pass a naive value).
    conversion_table = (
        ("is_consultation_number", [FilterTypedNumber]),
        ("is_uuid", []),
        ("is_datetime", _LOCAL_TIME_FILTERS),
        *SQLAFilterConverter.conversion_table,
    )


class StaffInterface(SQLAInterface):
    """SQLAInterface that eager-loads the given many-to-one relations (dotted for chains)."""

    filter_converter_class = _StaffFilterConverter

    def __init__(self, obj: type, session: Any = None, eager: Sequence[str] = ()) -> None:
        super().__init__(obj, session)
        self.eager = tuple(eager)

    def get(self, id: Any, filters: Any = None, *args: Any, **kwargs: Any):
        # PostgreSQL refuses a number past its INTEGER range in a query (DataError: a 500 on
        # /show/9999999999): such a key names no row, so it is "not found" like any other.
        if not _fits_integer_key(self, id):
            return None
        return super().get(id, filters, *args, **kwargs)

    def query_count(self, query: Any, filters: Any = None, select_columns: Any = None) -> int:
        # An exact COUNT(*) over a growing, row-scoped table is the one part of a list page
        # whose cost grows with the data; staff find people by search, not by paging to 5,000.
        inner = self._apply_inner_all(
            query, filters, select_columns=select_columns, aliases_mapping={}
        )
        counted = inner.limit(COUNT_CAP + 1).count()
        return CappedCount(COUNT_CAP) if counted > COUNT_CAP else counted

    def is_consultation_number(self, col_name: str) -> bool:
        return self.obj is Consultation and col_name == "number"

    def is_uuid(self, col_name: str) -> bool:
        column = self.list_columns.get(col_name)
        return column is not None and isinstance(column.type, Uuid)

    def apply_all(self, query, *args: Any, **kwargs: Any):
        query = super().apply_all(query, *args, **kwargs)
        for path in self.eager:
            model = self.obj
            option = None
            for name in path.split("."):
                attr = getattr(model, name)
                option = joinedload(attr) if option is None else option.joinedload(attr)
                model = attr.property.mapper.class_
            query = query.options(option)
        return query


COUNT_CAP = 1000


class CappedCount(int):
    """A record count that stopped counting at the cap: pages still work, the page says "1000+"."""

    def __html__(self) -> str:
        return f"{int(self)}+"

    def __str__(self) -> str:
        return f"{int(self)}+"


def _fits_integer_key(datamodel: SQLAInterface, value: Any) -> bool:
    pk = datamodel.get_pk_name()
    if not isinstance(pk, str) or not datamodel.is_integer(pk):
        return True
    try:
        number = int(value)
    except (TypeError, ValueError):
        return True  # not a number: FAB's filter turns it into "IS NULL", nothing is found
    return -(2**31) <= number < 2**31


class StaffModelView(ModelView):
    """ModelView without FAB's unscoped routes (actions, mass actions, file download)."""

    # Plain methods without @expose: FAB registers only methods carrying `_urls`, so these
    # replace the inherited routes with nothing (the URLs answer 404).
    def action(self, name: str, pk: str):  # type: ignore[override]
        abort(404)

    def action_post(self):  # type: ignore[override]
        abort(404)

    def download(self, filename: str):  # type: ignore[override]
        abort(404)


class LocalDateTimeWidget(DateTimePickerWidget):
    """FAB's picker renders `field.data` verbatim (UTC here); render the local value instead."""

    data_template = (
        '<div class="input-group date appbuilder_datetime" '
        'data-provide="datepicker" id="datetimepicker">'
        '<span class="input-group-addon"><i class="fa fa-calendar cursor-hand"></i>'
        "</span>"
        '<input class="form-control" data-format="yyyy-MM-dd hh:mm" %(text)s />'
        "</div>"
    )

    def __call__(self, field: DateTimeField, **kwargs: Any) -> Markup:
        kwargs.setdefault("id", field.id)
        kwargs.setdefault("name", field.name)
        # html_params escapes every attribute value; the template itself is a constant.
        params = html_params(type="text", value=field._value(), **kwargs)
        return Markup(self.data_template % {"text": params})  # noqa: S704


class LocalDateTimeField(DateTimeField):
    """A date and time typed in the viewer's zone (Russia spans eleven), kept as aware UTC."""

    widget = LocalDateTimeWidget()

    def __init__(self, label: Any = None, validators: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("format", [DATETIME_FORMAT, "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"])
        kwargs.setdefault("description", _l("In your time zone, format YYYY-MM-DD HH:MM."))
        super().__init__(label, validators, **kwargs)

    def process_formdata(self, valuelist: list[str]) -> None:
        super().process_formdata(valuelist)
        if isinstance(self.data, datetime) and self.data.tzinfo is None:
            self.data = self.data.replace(tzinfo=ZoneInfo(viewer_timezone())).astimezone(UTC)

    def _value(self) -> str:
        if self.raw_data:
            return " ".join(self.raw_data)
        if isinstance(self.data, datetime):
            local = self.data.astimezone(ZoneInfo(viewer_timezone()))
            return local.strftime(DATETIME_FORMAT)
        return ""


def checkbox_field(label: Any, description: Any = "", default: bool = False) -> BooleanField:
    return BooleanField(label, description=description, default=default, validators=[Optional()])


def optional_text_field(
    label: Any, max_length: int, description: Any = "", textarea: bool = False
) -> StringField:
    field_class = TextAreaField if textarea else StringField
    widget = BS3TextAreaFieldWidget() if textarea else BS3TextFieldWidget()
    return field_class(
        label,
        description=description,
        default="",
        widget=widget,
        validators=[Optional(), Length(max=max_length)],
    )


def yes_no(value: object) -> str:
    return str(_l("Yes") if value else _l("No"))


def joined(values: Any) -> str:
    return ", ".join(str(v) for v in values or ())


# ---------------------------------------------------------------------------------------------
# The patient's care forms (views/applications.py, views/consultations.py): documents to pick
# and to upload with a form, and what their templates show
# ---------------------------------------------------------------------------------------------

PROFILE_LABELS = {"cardiology": _l("Cardiology"), "gynaecology": _l("Gynaecology")}


def parse_uuids(values: list[str]) -> list[uuid.UUID]:
    """Document ids from checkboxes; a malformed one is refused like a foreign one."""
    try:
        return [uuid.UUID(v) for v in values if v]
    except ValueError as exc:
        raise svc.ConsultationError(_l("Only your own documents can be attached.")) from exc


def document_types() -> list[DocumentType]:
    stmt = select(DocumentType).order_by(DocumentType.sort_order, DocumentType.name)
    return list(db.session.execute(stmt).scalars())


def uploads_from_request(
    types_by_id: dict[int, DocumentType],
) -> list[tuple[BinaryIO, str, DocumentType | None]]:
    """Every file sent with the form and its document type: the general «file» field (type
    from «file_type») and each checklist line's «files-<type id>» / «photo-<type id>»."""
    general = types_by_id.get(request.form.get("file_type", type=int) or 0)
    found = []
    for key, upload in request.files.items(multi=True):
        if upload is None or not upload.filename:
            continue
        if key == "file":
            document_type = general
        else:
            prefix, _sep, type_id = key.partition("-")
            if prefix not in ("files", "photo") or not type_id.isdigit():
                continue
            document_type = types_by_id.get(int(type_id))
        found.append((upload.stream, upload.filename, document_type))
    return found


def upload_from_request(patient, types_by_id: dict[int, DocumentType]) -> list[MedicalDocument]:
    """The files uploaded with a form, all stored or none (through the documents service, the
    same checks as «Мои документы»). Call inside the unit of work."""
    return [
        store_document(patient, by=g.user, stream=stream, filename=name, document_type=kind)
        for stream, name, kind in uploads_from_request(types_by_id)
    ]


def own_document_choices(user) -> list[MedicalDocument]:
    # The patient's documents for the checkboxes; a generous page is enough for a form.
    return docs.own_documents(user, page=1, page_size=200).items


def template_helpers() -> dict:
    return {
        "status_labels": PATIENT_STATUS_LABELS,
        "kind_labels": PATIENT_KIND_LABELS,
        "type_label": type_label,
        "human_size": human_size,
        "is_image": docs.is_image,
        "in_zone": format_in_zone,
        "zone_label": zone_label,
        "profile_labels": PROFILE_LABELS,
    }
