"""Binding a request object to a function's parameters (apinode.runtime.binding)."""

import pytest

from apinode.runtime.binding import Binder, BindingError


def score(age, days, price=10):
    return age


def test_names_bind_as_keywords_and_defaults_apply():
    assert Binder(score).bind({"age": 1, "days": 2}) == ([], {"age": 1, "days": 2})


def test_missing_and_unexpected_are_named_with_the_signature():
    with pytest.raises(BindingError) as caught:
        Binder(score).bind({"age": 1, "prise": 3})
    message = str(caught.value)
    assert "missing parameter 'days'" in message
    assert "unexpected parameter 'prise'" in message
    assert "score(age, days, price=10)" in message
    assert caught.value.missing == ["days"] and caught.value.unexpected == ["prise"]


def test_several_missing_are_all_named():
    with pytest.raises(BindingError, match="missing parameters 'age', 'days'"):
        Binder(score).bind({})


def test_var_keyword_receives_the_rest():
    def f(z=0, **data):
        return data

    assert Binder(f).bind({"z": 1, "a": 2, "b": 3}) == ([], {"z": 1, "a": 2, "b": 3})


def test_keyword_only_and_positional_only():
    def f(a, /, b, *, c):
        return a, b, c

    binder = Binder(f)
    args, kwargs = binder.bind({"a": 1, "b": 2, "c": 3})
    assert f(*args, **kwargs) == (1, 2, 3)
    with pytest.raises(BindingError, match="missing parameter 'c'"):
        binder.bind({"a": 1, "b": 2})


def test_var_positional_is_never_required():
    def f(*args, x=1):
        return x

    assert Binder(f).bind({"x": 2}) == ([], {"x": 2})
    with pytest.raises(BindingError, match="unexpected parameter 'args'"):
        Binder(f).bind({"args": [1]})
