"""The documentation stays true to the code: the generated config reference is current, the example method
in docs/extending.md is the file the tests train, the README is short, and relative links resolve."""

import re

import pytest

from openjepa.config import reference_markdown
from tests.helpers import REPO, TESTS

DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


def test_config_reference_is_current():
    assert (REPO / "docs" / "config.md").read_text() == reference_markdown(), "run `make docs`"


def test_the_extending_guide_shows_the_tested_toy_method():
    text = (REPO / "docs" / "extending.md").read_text()
    shown = re.search(r"<!-- toy_method.py -->\n```python\n(.*?)```\n<!-- /toy_method.py -->", text, re.S)
    assert shown is not None
    assert shown.group(1) == (TESTS / "e2e" / "toy_method.py").read_text()


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text())
    missing = [link for link in links if "://" not in link and not (doc.parent / link).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"
