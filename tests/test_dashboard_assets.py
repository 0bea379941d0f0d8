"""The dashboard's shipped front-end: the vendored vis-timeline is exactly the copy npm installs for the
version package.json pins (so an upgrade goes through package.json), with its licence, and the page
loads nothing from outside the package."""

from __future__ import annotations

import json
import re

import pytest

from tests.host_support import REPO

STATIC = REPO / "durable_ext" / "dashboard" / "static"
VENDOR = STATIC / "vendor" / "vis-timeline"
PACKAGE = REPO / "node_modules" / "vis-timeline"
SHIPPED = {
    "vis-timeline-graph2d.min.js": "standalone/umd/vis-timeline-graph2d.min.js",
    "vis-timeline-graph2d.min.css": "styles/vis-timeline-graph2d.min.css",
    "LICENSE.md": "LICENSE.md",
    "LICENSE.MIT.txt": "LICENSE.MIT.txt",
    "LICENSE.Apache-2.0.txt": "LICENSE.Apache-2.0.txt",
}


def pinned_version() -> str:
    """The exact vis-timeline version package.json pins (a range would let npm pick another)."""
    version = str(json.loads((REPO / "package.json").read_text())["devDependencies"]["vis-timeline"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"vis-timeline must be pinned exactly, not {version!r}"
    return version


def test_the_installed_vis_timeline_is_the_pinned_one() -> None:
    assert PACKAGE.is_dir(), "vis-timeline is not installed: run `npm ci` (package.json pins it)"
    installed = json.loads((PACKAGE / "package.json").read_text())
    assert installed["version"] == pinned_version()
    assert installed["license"] == "(Apache-2.0 OR MIT)"


@pytest.mark.parametrize(("shipped", "source"), SHIPPED.items())
def test_each_shipped_file_is_npms_copy(shipped: str, source: str) -> None:
    assert PACKAGE.is_dir(), "vis-timeline is not installed: run `npm ci` (package.json pins it)"
    assert (VENDOR / shipped).read_bytes() == (PACKAGE / source).read_bytes(), (
        f"static/vendor/vis-timeline/{shipped} differs from node_modules/vis-timeline/{source}: "
        "copy it again after changing the version in package.json"
    )


def test_the_shipped_script_names_its_version_and_licence() -> None:
    header = (VENDOR / "vis-timeline-graph2d.min.js").read_text()[:2000]
    assert f"@version {pinned_version()}" in header
    assert "Apache 2.0" in header
    assert "MIT" in header


def test_the_page_loads_only_its_own_files() -> None:
    """No CDN at run time: every script and stylesheet the page names is under /dashboard/static/."""
    page = (STATIC / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert references
    for reference in references:
        assert reference.startswith("/dashboard/static/"), reference
        assert (STATIC / reference.removeprefix("/dashboard/static/")).is_file(), reference
    for module in (STATIC / "js").glob("*.js"):
        imports = re.findall(r'from "([^"]+)"', module.read_text())
        assert all(name.startswith("./") for name in imports), (module.name, imports)
