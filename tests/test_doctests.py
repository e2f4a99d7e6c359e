"""The examples in the docstrings of the installed package run and are right."""

import doctest
import importlib
import importlib.util
import inspect

import pytest

import fastsoftmax

# module -> whether it has examples of its own (the package's __init__
# re-exports functions whose docstrings belong to fastsoftmax._api)
MODULES = {
    "fastsoftmax": False,
    "fastsoftmax._api": True,
    "fastsoftmax._backend": True,
    "fastsoftmax.reference": True,
    "fastsoftmax.testing": True,
    "fastsoftmax.nn": True,
}
if importlib.util.find_spec("dask") is not None:  # an optional dependency
    MODULES["fastsoftmax.dask"] = True

# The functions of __all__ that compute something (and so must show how);
# the rest configure or report.
COMPUTING = {
    "softmax", "log_softmax", "logsumexp", "softmax_jacobian", "softmax_jvp", "softmax_vjp",
    "log_softmax_vjp", "softmax_cross_entropy",
}
NOT_COMPUTING = {"get_num_threads", "set_num_threads", "show_config"}


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    try:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS
                                 | doctest.NORMALIZE_WHITESPACE, verbose=False)
    finally:
        fastsoftmax.set_num_threads(None)  # an example may change the setting
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
    if MODULES[name]:
        assert result.attempted > 0


def test_every_public_name_is_classified():
    assert set(fastsoftmax.__all__) == COMPUTING | NOT_COMPUTING


@pytest.mark.parametrize("name", sorted(COMPUTING))
def test_public_function_has_examples(name):
    func = getattr(fastsoftmax, name)
    doc = inspect.getdoc(func)
    assert doc, f"{name} has no docstring"
    lines = doc.splitlines()
    # a numpydoc "Examples" section: the heading, its underline, then examples
    assert "Examples" in lines, f"{name} has no Examples section"
    start = lines.index("Examples")
    assert set(lines[start + 1]) == {"-"}
    section = lines[start + 2:]
    assert any(line.lstrip().startswith(">>> ") for line in section)
    # and the examples call the function itself
    assert any(f"{name}(" in line for line in section if line.lstrip().startswith(">>>"))
    # they are found and run by doctest (not hidden in a non-docstring)
    tests = doctest.DocTestFinder().find(func, name)
    assert sum(len(t.examples) for t in tests) > 0
