"""The README and the docs stay honest: their Python runs as far as it can without a server,
and they link only to pages that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import ROOT

PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = re.compile(r"```python\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def snippets() -> list[tuple[str, str]]:
    return [
        (f"{page.relative_to(ROOT)}:{n}", code)
        for page in PAGES
        for n, code in enumerate(PYTHON.findall(page.read_text(encoding="utf-8")))
    ]


@pytest.mark.parametrize(("where", "code"), snippets(), ids=[w for w, _ in snippets()])
def test_every_python_snippet_parses_and_its_imports_work(where: str, code: str) -> None:
    tree = ast.parse(code, where)
    ours: list[ast.stmt] = [
        node
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("vwo_heap_middleware")
    ]
    exec(compile(ast.Module(body=ours, type_ignores=[]), where, "exec"), {})


def test_the_readme_is_short_and_its_links_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}"


def test_the_site_lists_every_page() -> None:
    listed = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert {name for name in pages if name not in listed} == set()
    assert all(Path(ROOT / "docs" / name).exists() for name in re.findall(r": (\S+\.md)", listed))
