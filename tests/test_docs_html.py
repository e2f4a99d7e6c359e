"""The built HTML documentation has an API entry for every public function.

CI builds the docs, then points this test at them:

    python -m sphinx -W --keep-going -b html docs docs/_build/html
    FASTSOFTMAX_DOCS_HTML=docs/_build/html pytest tests/test_docs_html.py

Without FASTSOFTMAX_DOCS_HTML (a plain ``pytest``) every test here is
skipped.  An entry is what ``.. autofunction::`` makes of a function: a
``<dt id="fastsoftmax.<name>">`` holding the signature, followed by a
``<dd>`` with the docstring.
"""

import html
import os
import re
from pathlib import Path

import pytest

import fastsoftmax

HTML_DIR = os.environ.get("FASTSOFTMAX_DOCS_HTML")

pytestmark = pytest.mark.skipif(
    not HTML_DIR, reason="FASTSOFTMAX_DOCS_HTML is not set: it names the built HTML "
                         "folder (CI sets it after building the docs)")


@pytest.fixture(scope="module")
def pages():
    """{path: text} of every HTML page of the build."""
    root = Path(HTML_DIR)
    assert root.is_dir(), f"FASTSOFTMAX_DOCS_HTML={HTML_DIR}: no such folder (build the docs first)"
    found = {path: path.read_text(encoding="utf-8") for path in sorted(root.rglob("*.html"))}
    assert found, f"no HTML pages under {root}"
    return found


def _entry(name):
    """The <dt> of `name`'s API entry, its signature and the start of its <dd>."""
    anchor = re.escape(f"fastsoftmax.{name}")
    return re.compile(rf'<dt\b[^>]*\bid="{anchor}"[^>]*>(?P<sig>.*?)</dt>\s*<dd>(?P<body>.*?)</dd>',
                      re.DOTALL)


def _text(fragment):
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


@pytest.mark.parametrize("name", fastsoftmax.__all__)
def test_public_function_has_an_api_entry(pages, name):
    pattern = _entry(name)
    hits = [(path, match) for path, text in pages.items() for match in pattern.finditer(text)]
    assert hits, f'no page has an entry with id="fastsoftmax.{name}"'
    assert len(hits) == 1, f"fastsoftmax.{name} is documented more than once: " \
                           f"{[str(path) for path, _ in hits]}"
    path, match = hits[0]
    signature = _text(match["sig"])
    assert re.search(rf"\b{re.escape(name)}\s*\(", signature), (path, signature)
    assert _text(match["body"]), f"the entry of fastsoftmax.{name} in {path} has no text"
