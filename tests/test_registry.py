"""The one registry idiom: lazy targets, the unknown-name message, duplicate warning."""

import warnings

import pytest

from bench.registry import Registry, UnknownName


def test_lazy_target_is_imported_on_first_get_only():
    reg = Registry("thing", "x.name")
    reg.register("join", "os.path:join")
    assert isinstance(reg.raw("join"), str)
    import os.path

    assert reg.get("join") is os.path.join
    assert reg.raw("join") is os.path.join


def test_unknown_name_names_the_field_and_the_allowed_ones():
    reg = Registry("loss", "loss.name")
    reg.register("b", 1)
    reg.register("a", 2)
    with pytest.raises(UnknownName) as e:
        reg.get("c")
    assert str(e.value) == "unknown loss.name 'c'; allowed: a, b"
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)


def test_duplicate_warns_unless_replace_and_decorator_returns_the_object():
    reg = Registry("backbone")

    @reg.register("f")
    def f():
        return 1

    assert f() == 1 and reg.get("f") is f
    with pytest.warns(UserWarning, match="registered already"):
        reg.register("f", 2)
    assert reg.get("f") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.register("f", 3, replace=True)
    assert reg.get("f") == 3 and "f" in reg and reg.names() == ["f"] and len(reg) == 1
    reg.unregister("f")
    assert "f" not in reg
