"""Sphinx configuration for the fastsoftmax documentation.

Build (from the repository root, with ``pip install ".[docs]"`` done):

    python3 -m sphinx -W --keep-going -b html docs docs/_build/html
    python3 -m sphinx -W -b doctest docs docs/_build/doctest
"""

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import_fastsoftmax():
    """Import the compiled package for autodoc and the doctests.

    ``python -m sphinx`` puts the working directory first on sys.path, so
    from the repository root ``import fastsoftmax`` finds the source folder.
    That works for an in-place build (``pip install -e .`` or
    ``python setup.py build_ext --inplace``); for a plain ``pip install .``
    the source folder has no compiled modules (a fresh clone has neither the
    extension modules nor ``_build_config.py``), its import fails, and the
    installed package is used instead.

    With ``FASTSOFTMAX_EXPECT_INSTALLED=1`` (set by CI, as for the tests) the
    source folder is never tried: the installed package is documented even
    in a checkout that also has an in-place build.
    """
    if os.environ.get("FASTSOFTMAX_EXPECT_INSTALLED") != "1":
        try:
            return importlib.import_module("fastsoftmax")
        except ImportError:
            pass
    # Forget a half-imported source package, and the source folder itself
    # ("" too: Sphinx runs this file from docs/, but builds from the root).
    for name in [m for m in sys.modules if m.split(".")[0] == "fastsoftmax"]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != ROOT]
    return importlib.import_module("fastsoftmax")


fastsoftmax = _import_fastsoftmax()
print(f"fastsoftmax {fastsoftmax.__version__} documented from {Path(fastsoftmax.__file__).parent}")

project = "fastsoftmax"
author = "the fastsoftmax authors"
copyright = "the fastsoftmax authors"
version = release = fastsoftmax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# -- autodoc / autosummary / numpydoc ---------------------------------------
autodoc_member_order = "bysource"
# The numpydoc docstrings describe the types; the annotations (overloads,
# NumPy's expanded ArrayLike) would bury the plain signatures.
autodoc_typehints = "none"
autosummary_generate = False          # tables only; the entries live in api.rst
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# -- doctest -----------------------------------------------------------------
# Every page's examples run with these names; `>>>` blocks in the pages and
# in the docstrings pulled in by autodoc are both tested.
doctest_global_setup = """
import numpy as np
import fastsoftmax as fs
"""
# Leave the thread setting as it was found, whatever an example did.
doctest_global_cleanup = """
fs.set_num_threads(None)
"""

# -- HTML --------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"fastsoftmax {release}"
html_theme_options = {
    "description": "Fast, exact softmax and its derivatives for NumPy",
    "fixed_sidebar": False,
}
