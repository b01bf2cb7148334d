"""pyproject's dependencies are what the code imports, and constraints.txt pins the whole tree.

- Every third-party module the service imports (app/, views/, media_server/, migrations/,
  models.py, config.py, run.py, scripts/) belongs to a distribution in `dependencies`; the
  tests and benchmarks (tests/, bench/) may also use the `dev` extra. Imports are read with
  ast (every import statement, wherever it sits) and mapped to distributions by
  importlib.metadata.packages_distributions().
- The other way round: a declared distribution nothing imports must say why on its line in
  pyproject.toml with a `# not imported:` comment, and one that is imported must not.
- constraints.txt (written by `make lock`) pins every distribution the declared requirements
  reach, within the declared ranges, and the environment running the tests is that one
  (`make setup` installs with it).
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.no_db

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_TREES = (
    "app",
    "views",
    "media_server",
    "migrations",
    "models.py",
    "config.py",
    "run.py",
    "scripts",
)
DEV_TREES = ("tests", "bench")
NOT_IMPORTED = "# not imported:"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_files(trees: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for tree in trees:
        path = ROOT / tree
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def _is_local(name: str, source: Path) -> bool:
    """A module of this repository: top level, or beside the file (bench/common.py)."""
    return any(
        (folder / f"{name}.py").exists() or (folder / name).is_dir()
        for folder in (ROOT, source.parent)
    )


@cache
def third_party_imports(trees: Iterable[str]) -> dict[str, set[str]]:
    """Top-level module name → the files importing it (standard library and local left out)."""
    found: dict[str, set[str]] = {}
    for path in python_files(trees):
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top == "__future__":
                    continue
                if not _is_local(top, path):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def declared() -> dict[str, dict[str, tuple[Requirement, str]]]:
    """{"runtime" | "dev": {canonical name: (requirement, its line in pyproject.toml)}}."""
    text = (ROOT / "pyproject.toml").read_text()
    project = tomllib.loads(text)["project"]
    lines = text.splitlines()

    def table(specs: list[str]) -> dict[str, tuple[Requirement, str]]:
        out = {}
        for spec in specs:
            line = next(line for line in lines if f'"{spec}"' in line)
            out[canonical(Requirement(spec).name)] = (Requirement(spec), line)
        return out

    return {
        "runtime": table(project["dependencies"]),
        "dev": table(project["optional-dependencies"]["dev"]),
    }


@cache
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    return {canonical(d) for d in _packages_distributions().get(module, [])}


def undeclared(trees: Iterable[str], allowed: set[str]) -> dict[str, str]:
    problems = {}
    for module, files in sorted(third_party_imports(trees).items()):
        dists = distributions_of(module)
        if not dists:
            problems[module] = f"not installed (imported by {sorted(files)[0]})"
        elif not dists & allowed:
            problems[module] = f"{sorted(dists)} undeclared (imported by {sorted(files)[0]})"
    return problems


def test_the_service_imports_only_declared_packages():
    assert undeclared(RUNTIME_TREES, set(declared()["runtime"])) == {}


def test_tests_and_benchmarks_import_only_declared_packages():
    allowed = set(declared()["runtime"]) | set(declared()["dev"])
    assert undeclared(DEV_TREES, allowed) == {}


@pytest.mark.parametrize(("group", "trees"), [("runtime", RUNTIME_TREES), ("dev", DEV_TREES)])
def test_a_declared_package_is_imported_or_says_why_not(group, trees):
    imported = set().union(*(distributions_of(m) for m in third_party_imports(trees)))
    if group == "dev":  # the tests may use a runtime package; a dev one must be used by them
        imported -= set(declared()["runtime"])
    wrong = {}
    for name, (_req, line) in declared()[group].items():
        says_not_imported = NOT_IMPORTED in line
        if name in imported and says_not_imported:
            wrong[name] = "imported, yet marked «not imported»"
        elif name not in imported and not says_not_imported:
            wrong[name] = f"nothing imports it: drop it or say why with '{NOT_IMPORTED} …'"
    assert wrong == {}


def test_openpyxl_parses_through_defusedxml():
    """defusedxml is declared for openpyxl, which uses it only when it is installed."""
    import openpyxl
    import openpyxl.xml
    from openpyxl.xml import functions

    assert openpyxl.xml.DEFUSEDXML is True
    assert functions.iterparse.__module__.startswith("defusedxml")
    # A sheet declaring an entity is refused by openpyxl's parser, not expanded.
    book = io.BytesIO()
    openpyxl.Workbook().save(book)
    bombed = io.BytesIO()
    with zipfile.ZipFile(book) as src, zipfile.ZipFile(bombed, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = b'<!DOCTYPE worksheet [<!ENTITY lol "lol">]>' + data
            dst.writestr(item, data)
    with pytest.raises(Exception) as refused:
        openpyxl.load_workbook(io.BytesIO(bombed.getvalue()))
    chain, exc = [], refused.value
    while exc is not None:  # openpyxl wraps the parser's refusal in its own ValueError
        chain.append(type(exc))
        exc = exc.__cause__ or exc.__context__
    assert any(t.__module__.startswith("defusedxml") for t in chain), chain


def constraints() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert match, f"constraints.txt: not a name==version pin: {line!r}"
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def requirement_tree() -> dict[str, set[str]]:
    """Every distribution the declared requirements reach here → who asked for it."""
    reached: dict[str, set[str]] = {}
    queue = [
        (req, "pyproject.toml") for group in declared().values() for req, _line in group.values()
    ]
    while queue:
        req, parent = queue.pop()
        name = canonical(req.name)
        seen = name in reached
        reached.setdefault(name, set()).add(parent)
        if seen and not req.extras:
            continue
        for spec in metadata.requires(req.name) or []:
            child = Requirement(spec)
            extras = req.extras or {""}
            if child.marker and not any(child.marker.evaluate({"extra": e}) for e in extras):
                continue
            if canonical(child.name) not in reached or child.extras:
                queue.append((child, name))
    return reached


def test_constraints_pin_the_whole_tree_within_the_declared_ranges():
    pins = constraints()
    tree = requirement_tree()
    unpinned = {name: sorted(parents) for name, parents in tree.items() if name not in pins}
    assert unpinned == {}, "run `make lock`"
    outside = {
        name: (str(req.specifier), pins[name])
        for group in declared().values()
        for name, (req, _line) in group.items()
        if not req.specifier.contains(pins[name], prereleases=True)
    }
    assert outside == {}, "a pin outside pyproject's range: run `make lock`"


def test_this_environment_is_the_pinned_one():
    """What the tests run on is what constraints.txt says (`make setup` installs with it)."""
    pins = constraints()
    differ = {}
    for name in requirement_tree():
        installed = metadata.version(name)
        if installed != pins.get(name):
            differ[name] = (installed, pins.get(name))
    assert differ == {}, "run `make setup` (it installs with constraints.txt)"
