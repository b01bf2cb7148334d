"""SQL building blocks the reports share: a duration in seconds on both databases, people's
names, the centre and doctor joins, the period and scope conditions, and paging."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, and_, func
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from app.reports.filters import Filters
from models import Consultation, Doctor, MedicalCenter

PAGE_SIZE = 50

C = Consultation


class seconds_between(FunctionElement):
    """(end - start) in seconds, on SQLite and PostgreSQL."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between)
def _seconds_sqlite(element, compiler, **kw) -> str:
    start, end = list(element.clauses)
    return (
        f"((julianday({compiler.process(end, **kw)}) - "
        f"julianday({compiler.process(start, **kw)})) * 86400.0)"
    )


@compiles(seconds_between, "postgresql")
def _seconds_postgresql(element, compiler, **kw) -> str:
    start, end = list(element.clauses)
    return f"EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)}))"


def person_name(surname, name, patronymic) -> ColumnElement[str]:
    """A person's full name in SQL ('' for a missing outer-joined row)."""
    return func.coalesce(func.trim(surname + " " + name + " " + patronymic), "")


DOCTOR_NAME = person_name(Doctor.surname, Doctor.name, Doctor.patronymic)
CENTRE_NAME = func.coalesce(MedicalCenter.name, "")


def with_people(stmt: Select) -> Select:
    """The consultation's centre and doctor, outer-joined (either may be missing)."""
    return stmt.outerjoin(MedicalCenter, MedicalCenter.id == C.center_id).outerjoin(
        Doctor, Doctor.id == C.doctor_id
    )


def in_period(column, f: Filters) -> ColumnElement[bool]:
    """The moment lies within the filters' period [start, end)."""
    return and_(column >= f.start, column < f.end)


def scope_conditions(f: Filters) -> list[ColumnElement[bool]]:
    """The consultation filters every report shares: centre, doctor, kind."""
    conditions: list[ColumnElement[bool]] = []
    if f.centre_id is not None:
        conditions.append(C.center_id == f.centre_id)
    if f.doctor_id is not None:
        conditions.append(C.doctor_id == f.doctor_id)
    if f.kind:
        conditions.append(C.kind == f.kind)
    return conditions


def page_bounds(total: int, page: int, size: int = PAGE_SIZE) -> tuple[int, int]:
    """(the asked page brought within range, the number of pages)."""
    pages = max(1, math.ceil(total / size))
    return min(max(1, page), pages), pages


@dataclass
class Page:
    """One page of a report's list."""

    rows: list[Any]
    page: int
    pages: int
    total: int
