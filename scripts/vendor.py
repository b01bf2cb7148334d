"""Browser libraries from the npm registry, pinned by version and SHA-256 (never a CDN).

`make setup` runs this: each package's tarball is fetched with `npm pack`, checked against its
pinned hash, and the listed files are copied under app/static/vendor/ (not committed: built here,
like the .mo catalogues). Already present with the right hash → nothing is fetched. axe-core,
which only the browser tests inject, goes to tests/e2e/vendor/ instead.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "app" / "static" / "vendor"

# (npm spec, tarball sha256, {path inside the tarball: file name under vendor/})
PACKAGES: list[tuple[str, str, dict[str, str]]] = [
    (
        "socket.io-client@4.8.1",
        "e39a4baa07488a5cfe10de424bc8646ed897f5dbd318312a852ff74570e47e01",
        {"package/dist/socket.io.min.js": "socket.io.min.js"},
    ),
]

# Libraries only the browser tests inject into pages (never served by the app): under
# tests/e2e/vendor/, not committed either.
TEST_VENDOR = ROOT / "tests" / "e2e" / "vendor"
TEST_PACKAGES: list[tuple[str, str, dict[str, str]]] = [
    (
        "axe-core@4.14.1",
        "e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745",
        {"package/axe.min.js": "axe.min.js"},
    ),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stamp(spec: str) -> Path:
    return VENDOR / f".{spec.replace('/', '_').replace('@', '_')}.ok"


def pack(spec: str, digest: str, tmp: str) -> Path:
    """`npm pack` the package into `tmp` and check the tarball against its pinned hash."""
    out = (
        subprocess.run(
            ["npm", "pack", spec, "--silent", "--pack-destination", tmp],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    tarball = Path(tmp) / out
    actual = _sha256(tarball)
    if actual != digest:
        sys.exit(f"{spec}: sha256 {actual} does not match the pinned {digest}")
    return tarball


def fetch(spec: str, digest: str, files: dict[str, str], into: Path = VENDOR) -> None:
    stamp = into / _stamp(spec).name
    if stamp.exists() and all((into / name).exists() for name in files.values()):
        return
    with tempfile.TemporaryDirectory() as tmp:
        tarball = pack(spec, digest, tmp)
        with tarfile.open(tarball) as tar:
            for member, name in files.items():
                source = tar.extractfile(member)
                if source is None:
                    sys.exit(f"{spec}: {member} missing from the package")
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, open(target.with_suffix(target.suffix + ".tmp"), "wb") as fh:
                    shutil.copyfileobj(source, fh)
                target.with_suffix(target.suffix + ".tmp").replace(target)
    stamp.write_text(digest)
    print(f"vendored {spec}")


def main() -> None:
    if shutil.which("npm") is None:
        sys.exit("npm is needed once to fetch the browser libraries (apt-get install npm)")
    VENDOR.mkdir(parents=True, exist_ok=True)
    for spec, digest, files in PACKAGES:
        fetch(spec, digest, files)
    TEST_VENDOR.mkdir(parents=True, exist_ok=True)
    for spec, digest, files in TEST_PACKAGES:
        fetch(spec, digest, files, into=TEST_VENDOR)


if __name__ == "__main__":
    main()
