"""The request boundary: what comes in from the outside is checked once, for every view.

- Text: every string of a request (query string, form fields, uploaded file names, JSON) loses
  NUL and the other control characters on the way in (BoundaryRequest); newline and tab stay
  (a lone CR does not), and a single-line form field loses them too (the WTForms filter). One
  rule for FAB's forms, ours and the API: PostgreSQL cannot store NUL, and control characters
  must not travel on into SMS and e-mail.
- Lists: the paging, sorting and filter parameters of every list served by Flask-AppBuilder
  (its CRUD lists and the project's own list pages) are checked before the view runs; a bad
  one is a 400 with a Russian message (BadParameter), never a 500 deep in a query. The reports
  (Flask-Admin, views/reports.py) answer on their own page but parse the page number here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

from dateutil import parser as date_parser
from flask import Flask, current_app, request
from flask.wrappers import Request
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from sqlalchemy import BigInteger, inspect
from werkzeug.datastructures import FileStorage, ImmutableMultiDict
from wtforms import Field
from wtforms.meta import DefaultMeta
from wtforms.widgets import TextArea

from app.errors import DomainError

# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

# C0 controls but tab and newline, DEL, C1 controls; CR only as part of CRLF (what browsers
# send for a text area's line breaks).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")
_LINE_BREAKS = re.compile(r"[\t\r\n]+")


def clean_text(value: str) -> str:
    """The text without NUL and control characters; newline, tab and CRLF kept."""
    return _CONTROL.sub("", value)


def single_line(value: str) -> str:
    """A one-line value: line breaks and tabs become one space."""
    return _LINE_BREAKS.sub(" ", clean_text(value))


def clean_data(value: Any) -> Any:
    """Strings, lists and dicts (JSON) cleaned throughout, keys included."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_data(v) for v in value]
    if isinstance(value, dict):
        return {clean_data(k): clean_data(v) for k, v in value.items()}
    return value


def _clean_pairs(pairs: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    for key, value in pairs:
        if isinstance(value, FileStorage):
            if value.filename:
                value.filename = single_line(value.filename)
        elif isinstance(value, str):
            value = clean_text(value)
        yield clean_text(key), value


class CleanMultiDict(ImmutableMultiDict):
    """The query string and the form (files too) as the views read them: already clean."""

    def __init__(self, mapping: Any = None) -> None:
        if mapping is None:
            super().__init__()
        elif hasattr(mapping, "lists"):  # a MultiDict
            super().__init__(_clean_pairs((k, v) for k, vs in mapping.lists() for v in vs))
        elif isinstance(mapping, dict):
            super().__init__(_clean_pairs(_dict_pairs(mapping)))
        else:
            super().__init__(_clean_pairs(mapping))


def _dict_pairs(mapping: dict) -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, list | tuple):
            yield from ((key, v) for v in value)
        else:
            yield key, value


class BoundaryRequest(Request):
    parameter_storage_class = CleanMultiDict

    def get_json(self, *args: Any, **kwargs: Any) -> Any:
        return clean_data(super().get_json(*args, **kwargs))


def _single_line_filter(value: Any) -> Any:
    return single_line(value) if isinstance(value, str) else value


def _bind_field(meta: Any, form: Any, unbound_field: Any, options: dict) -> Field:
    """Field binding for every Flask-WTF form (FAB's generated ones and ours): a field that is
    not a text area keeps its value on one line."""
    field = DefaultMeta.bind_field(meta, form, unbound_field, options)
    if not isinstance(field.widget, TextArea):
        field.filters = (*field.filters, _single_line_filter)
    return field


# ---------------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------------

PAGE_MAX = 1_000_000
PAGE_SIZE_MAX = 100
INT32 = 2**31
INT64 = 2**63


class BadParameter(DomainError):
    """A query parameter the page reads is not valid: answered 400 with the message."""


def parse_page(raw: str, *, first: int = 1) -> int:
    """A page number: ASCII digits from `first` (FAB counts from 0, our pages from 1)."""
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7 and first <= int(raw) <= PAGE_MAX):
        raise BadParameter(_("The page number must be a positive whole number."))
    return int(raw)


def parse_page_size(raw: str) -> int:
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= PAGE_SIZE_MAX):
        raise BadParameter(
            _("The page size must be a whole number from 1 to %(n)d.", n=PAGE_SIZE_MAX)
        )
    return int(raw)


# The project's own list pages (and the documents API) read these names.
_OWN_PAGE = "page"
_OWN_SIZES = ("page_size", "psize")

# FAB's names (flask_appbuilder.urltools): matched the way FAB matches them, anywhere in the key.
_FAB_PAGE = re.compile("page_(.*)")
_FAB_SIZE = re.compile("psize_(.*)")
_FAB_ORDER = re.compile("_oc_(.*)")
_FAB_DIRECTION = re.compile("_od_(.*)")
_FAB_FILTER = re.compile(r"_flt_(\d)_(.*)")


def check_list_args(args: Any, view: Any) -> None:
    """Every paging, sorting and filter parameter `view` (a FAB view or API) would read."""
    crud = getattr(view, "_filters", None) is not None and hasattr(view, "datamodel")
    for key in args:
        values = args.getlist(key)
        if key == _OWN_PAGE:
            for v in values:
                parse_page(v)
        elif key in _OWN_SIZES:
            for v in values:
                parse_page_size(v)
        elif _FAB_SIZE.search(key):
            for v in values:
                parse_page_size(v)
        elif _FAB_PAGE.search(key):
            for v in values:
                parse_page(v, first=0)
        elif crud and (match := _FAB_ORDER.search(key)):
            _check_order(match.group(1), values)
        elif crud and _FAB_DIRECTION.search(key):
            if any(v not in ("asc", "desc") for v in values):
                raise BadParameter(_("The sort order must be ascending or descending."))
        elif crud and (match := _FAB_FILTER.search(key)):
            _check_filter(view, int(match.group(1)), match.group(2), values)


def _crud_view(name: str) -> Any:
    for view in current_app.appbuilder.baseviews:
        if view.__class__.__name__ == name and hasattr(view, "order_columns"):
            return view
    return None


def _check_order(view_name: str, values: list[str]) -> None:
    view = _crud_view(view_name)
    columns = (view.order_columns or ()) if view is not None else ()
    if any(v not in columns for v in values):
        raise BadParameter(_("The list cannot be sorted by this column."))


def _check_filter(view: Any, index: int, column: str, values: list[str]) -> None:
    filters = view._filters._all_filters.get(column)
    if not filters or index >= len(filters):
        raise BadParameter(_("This list has no such filter."))
    flt = filters[index]
    datamodel = view.datamodel
    label = view.label_columns.get(column, column)
    if not all(_valid_filter_value(datamodel, column, flt, v) for v in values):
        raise BadParameter(_("%(field)s: the filter value is not valid.", field=label))


def _valid_filter_value(datamodel: Any, column: str, flt: Any, value: str) -> bool:
    """Whether FAB's filter can put `value` into SQL on SQLite and PostgreSQL alike."""
    from flask_appbuilder.models.filters import FilterRelation

    if isinstance(flt, FilterRelation):
        pk = inspect(datamodel.get_related_model(column)).primary_key[0]
        return _fits_integer(value, pk.type) if _is_integer_type(pk.type) else True
    if datamodel.is_boolean(column):
        return value == "y"  # the search form's ticked box; "not equal" covers unticked
    if datamodel.is_integer(column):
        return _fits_integer(value, datamodel.list_columns[column].type)
    if datamodel.is_float(column) or datamodel.is_numeric(column):
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    if datamodel.is_date(column) or datamodel.is_datetime(column):
        try:
            date_parser.parse(value)
        except (ValueError, OverflowError, TypeError):
            return False
        return True
    if datamodel.is_enum(column):
        return value in datamodel.list_columns[column].type.enums
    return True


def _is_integer_type(type_: Any) -> bool:
    try:
        return type_.python_type is int
    except NotImplementedError:
        return False


def _fits_integer(value: str, type_: Any) -> bool:
    raw = value.strip().removeprefix("-")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        return False
    bound = INT64 if isinstance(type_, BigInteger) else INT32
    return -bound <= int(value) < bound


def _fab_view() -> Any:
    """The FAB view or API serving this request, if any (their routes are bound methods)."""
    from flask_appbuilder.baseviews import AbstractViewApi

    func = current_app.view_functions.get(request.endpoint or "")
    owner = getattr(func, "__self__", None)
    return owner if isinstance(owner, AbstractViewApi) else None


def init_app(app: Flask) -> None:
    app.request_class = BoundaryRequest
    FlaskForm.Meta.bind_field = _bind_field  # FAB's DynamicForm and our forms are FlaskForms

    @app.url_value_preprocessor
    def _clean_path_values(_endpoint: str | None, values: dict[str, Any] | None) -> None:
        for key, value in (values or {}).items():
            if isinstance(value, str):
                values[key] = single_line(value)  # type: ignore[index]

    @app.before_request
    def _check_list_parameters() -> None:
        view = _fab_view()
        if view is not None and request.args:
            check_list_args(request.args, view)
