#!/usr/bin/env python3
"""Build the translation catalogues from the source and the reviewed Russian texts.

  extract   scan the code and templates into translations/messages.pot
  build     write ru/ and en/ messages.po from the .pot and translations/ru_parts/*.json
  compile   compile the .po files into .mo (done by `make setup`; .mo are never committed)
  check     exit 1 when the .pot is stale or a Russian message is missing (used by the tests)

With no argument: extract, build, compile. The Russian texts live in ru_parts/*.json (msgid →
text, one file per area) so that reviewers edit small files and the .po is always regenerated;
ru_parts/fab.json translates the Flask-AppBuilder strings its own old Russian catalogue lacks.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "translations"
POT = TRANSLATIONS / "messages.pot"
PARTS = TRANSLATIONS / "ru_parts"
KEYWORDS = ["_", "_l", "gettext", "lazy_gettext", "ngettext:1,2", "lazy_ngettext:1,2"]


def extract_catalog() -> Catalog:
    # A private temporary folder: two checkouts sharing one virtualenv may extract at once.
    tmp = tempfile.TemporaryDirectory(prefix="oblako-i18n-")
    out = Path(tmp.name) / "messages.pot"
    cmd = [
        sys.executable,
        "-m",
        "babel.messages.frontend",
        "extract",
        "-F",
        str(TRANSLATIONS / "babel.cfg"),
        "--no-location",
        "--sort-output",
        "--omit-header",
        "--no-wrap",
        "-o",
        str(out),
        *[f"-k{k}" for k in KEYWORDS],
        str(ROOT),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    with tmp, out.open("rb") as fh:
        return read_po(fh)


def _dump(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    write_po(buf, catalog, omit_header=True, no_location=True, sort_output=True, width=0)
    return buf.getvalue()


def load_parts() -> dict[str, str | list[str]]:
    merged: dict[str, str | list[str]] = {}
    for path in sorted(PARTS.glob("*.json")):
        merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


def build(pot: Catalog) -> dict[str, list[str]]:
    """Write ru and en catalogues; return {'missing': [...]} for Russian texts not found."""
    parts = load_parts()
    missing: list[str] = []
    ru = Catalog(locale="ru", domain="messages", project="Oblako", charset="utf-8")
    en = Catalog(locale="en", domain="messages", project="Oblako", charset="utf-8")
    ids = [m.id for m in pot if m.id]
    fab_ids = (
        json.loads((PARTS / "fab.json").read_text(encoding="utf-8"))
        if (PARTS / "fab.json").exists()
        else {}
    )
    for msgid in ids:
        key = msgid if isinstance(msgid, str) else msgid[0]
        text = parts.get(key)
        if not text:
            missing.append(key)
        if isinstance(msgid, tuple):
            forms = text if isinstance(text, list) else [text or ""] * 3
            ru.add(msgid, string=tuple(forms))
            en.add(msgid, string=("", ""))
        else:
            ru.add(msgid, string=text or "")
            en.add(msgid, string="")
    # Flask-AppBuilder's strings that its own Russian catalogue leaves untranslated.
    for msgid, text in fab_ids.items():
        if msgid not in ru:
            ru.add(msgid, string=text)
    for lang, catalog in (("ru", ru), ("en", en)):
        target = TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_dump(catalog))
    return {"missing": missing}


def compile_all() -> None:
    for po in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"):
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=po.parent.parent.name)
        # Written aside and renamed: a process starting meanwhile (another `make` running
        # setup, a server) reads the old catalogue or the new one, never half of one.
        mo = po.with_suffix(".mo")
        aside = mo.with_name(f".{mo.name}.{os.getpid()}")
        with aside.open("wb") as fh:
            write_mo(fh, catalog, use_fuzzy=False)
        os.replace(aside, mo)


def check() -> list[str]:
    problems: list[str] = []
    fresh = extract_catalog()
    committed = read_po(POT.open("rb")) if POT.exists() else Catalog()
    fresh_ids = {m.id for m in fresh if m.id}
    committed_ids = {m.id for m in committed if m.id}
    if fresh_ids != committed_ids:
        added = sorted(map(str, fresh_ids - committed_ids))[:10]
        removed = sorted(map(str, committed_ids - fresh_ids))[:10]
        problems.append(f"messages.pot is stale: new {added}, gone {removed}")
    ru = read_po((TRANSLATIONS / "ru/LC_MESSAGES/messages.po").open("rb"), locale="ru")
    for msgid in fresh_ids:
        message = ru.get(msgid)
        strings = (message.string if message else "") or ""
        if isinstance(strings, tuple):
            ok = all(strings)
        else:
            ok = bool(strings)
        if not ok or (message and message.fuzzy):
            problems.append(f"untranslated in ru: {msgid!r}")
    return problems


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "all"
    if command == "compile":
        compile_all()
        return 0
    if command == "check":
        problems = check()
        print("\n".join(problems) or "catalogues are complete")
        return 1 if problems else 0
    pot = extract_catalog()
    POT.write_bytes(_dump(pot))
    if command == "extract":
        return 0
    result = build(pot)
    if command in ("all", "build"):
        compile_all()
    for msgid in result["missing"]:
        print(f"missing Russian text: {msgid!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
