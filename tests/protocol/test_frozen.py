"""The generated constructors of the message classes behave as the dataclass ones did.

Each message class is compared with its *twin*: a class with the same name
and fields made by ``dataclasses.make_dataclass`` alone, so with the
``__init__`` dataclasses writes.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import frozen
from protocol.codegen import source_of
from protocol.errors import LocalProtocolError
from protocol.messages import (
    Message,
    NewTopic,
    ProducePartition,
    ProducePartitionResponse,
    ProduceRequest,
    TopicConfigs,
    replace,
)

from .strategies import BY_NAME, MESSAGE_CLASSES, init_kwargs, property_settings, strategy_for

PROPERTY = property_settings(25)

_TWINS: dict[type, type] = {}


def twin(cls: type) -> type:
    """``cls`` remade by dataclasses alone (same name, fields, defaults and __post_init__)."""
    if cls not in _TWINS:
        fields = []
        for f in dataclasses.fields(cls):
            default = {}
            if f.default is not dataclasses.MISSING:
                default["default"] = f.default
            if f.default_factory is not dataclasses.MISSING:
                default["default_factory"] = f.default_factory
            fields.append((f.name, f.type, dataclasses.field(
                kw_only=f.kw_only, metadata=f.metadata, **default)))
        namespace = {"__post_init__": cls.__post_init__} if hasattr(cls, "__post_init__") else {}
        _TWINS[cls] = dataclasses.make_dataclass(
            cls.__name__, fields, namespace=namespace, frozen=True, slots=True)
    return _TWINS[cls]


def field_values(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def outcome(fn):
    """What calling ``fn`` gives: ("ok", value) or (exception type, message)."""
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        return type(exc), str(exc)


def split_args(cls: type, kwargs: dict, positional: int) -> tuple[list, dict]:
    """The first ``positional`` of the positional parameters in ``kwargs``, moved to a list."""
    params = list(inspect.signature(cls).parameters.values())
    args = []
    kwargs = dict(kwargs)
    for p in params[:positional]:
        if p.kind is not p.POSITIONAL_OR_KEYWORD or p.name not in kwargs:
            break
        args.append(kwargs.pop(p.name))
    return args, kwargs


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, **BY_NAME)
def test_every_message_class_has_a_generated_init(cls):
    assert "def __init__(self" in source_of(cls.__init__)
    assert frozen.construction(cls) is not None
    assert frozen.construction(cls).builder is not None


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, **BY_NAME)
@PROPERTY
@given(data=st.data())
def test_construction_matches_the_dataclass_constructor(cls, data):
    kwargs = data.draw(init_kwargs(cls), label="kwargs")
    args, kwargs = split_args(cls, kwargs, data.draw(st.integers(0, 8), label="positional"))
    ours = cls(*args, **kwargs)
    theirs = twin(cls)(*args, **kwargs)
    assert type(ours) is cls
    assert field_values(ours) == field_values(theirs)
    assert repr(ours) == repr(theirs)
    assert outcome(lambda: hash(ours)) == outcome(lambda: hash(theirs))
    assert ours == cls(*args, **kwargs)
    assert (ours != cls(*args, **kwargs)) is False


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, **BY_NAME)
def test_signature_is_the_dataclass_one(cls):
    assert inspect.signature(cls) == inspect.signature(twin(cls))
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
    assert cls.__match_args__ == twin(cls).__match_args__


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, **BY_NAME)
def test_defaults_apply_and_factories_make_fresh_values(cls):
    required = {f.name: 0 for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    a, b = cls(**required), cls(**required)
    assert field_values(a) == field_values(twin(cls)(**required))
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            assert getattr(a, f.name) == f.default_factory()
            assert getattr(a, f.name) is not getattr(b, f.name)
        elif f.default is not dataclasses.MISSING:
            assert getattr(a, f.name) is f.default


def test_a_default_factory_is_not_called_for_a_given_value():
    configs = {"a": "b"}
    assert NewTopic("t", configs=configs).configs is configs
    assert TopicConfigs("t").configs == {}


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, **BY_NAME)
@property_settings(10)
@given(data=st.data())
def test_objects_stay_frozen(cls, data):
    obj = data.draw(strategy_for(cls))
    before = field_values(obj)
    for name in before:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, 1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(obj, name)
    # (Python 3.11's dataclasses raise TypeError here, from super() in the
    # frozen __setattr__ of a slots class; whatever it is, it is unchanged.)
    theirs = twin(cls)(**before)
    ours_fails = outcome(lambda: setattr(obj, "not_a_field", 1))[0]
    assert ours_fails != "ok" and ours_fails is outcome(lambda: setattr(theirs, "not_a_field", 1))[0]
    assert field_values(obj) == before
    assert type(obj) is cls and not hasattr(obj, "__dict__")


def test_post_init_validates():
    for acks in (2, -2, "1", None):
        with pytest.raises(LocalProtocolError):
            ProduceRequest(acks=acks)
        with pytest.raises(LocalProtocolError):
            replace(ProduceRequest(), acks=acks)
    assert ProduceRequest(-1).acks == -1
    assert outcome(lambda: ProduceRequest(acks=3)) == outcome(lambda: twin(ProduceRequest)(acks=3))


def test_wrong_arguments_fail_as_before():
    calls = [
        lambda c: c(),                                  # a required field missing
        lambda c: c("t", 0, b"", b""),                  # too many positional
        lambda c: c("t", 0, b"", topic="u"),            # twice
        lambda c: c("t", 0, records=b"", nope=1),       # an unknown keyword
    ]
    for call in calls:
        ours = outcome(lambda call=call: call(ProducePartition))
        theirs = outcome(lambda call=call: call(twin(ProducePartition)))
        assert ours[0] is theirs[0] is TypeError
    with pytest.raises(TypeError):
        ProduceRequest(1, 30000, (), 5)  # correlation_id is keyword-only


def test_replace_copy_and_pickle():
    msg = ProduceRequest(acks=0, partitions=(ProducePartition("t", 1, b"x"),), correlation_id=4)
    assert replace(msg, correlation_id=5) == ProduceRequest(
        acks=0, partitions=(ProducePartition("t", 1, b"x"),), correlation_id=5)
    assert dataclasses.replace(msg, acks=1).acks == 1
    assert copy.copy(msg) == msg and copy.deepcopy(msg) == msg
    assert pickle.loads(pickle.dumps(msg)) == msg
    match msg:
        case ProduceRequest(0, 30000, (ProducePartition("t", 1, b"x"),)):
            pass
        case _:
            pytest.fail("match_args changed")


def test_subclasses_get_their_own_class():
    class Plain(ProducePartitionResponse):
        pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class More(ProducePartitionResponse):
        more: int = 1

    class Checked(ProduceRequest):
        def __post_init__(self):
            super().__post_init__()
            if self.timeout_ms < 0:
                raise LocalProtocolError("negative timeout")

    p = Plain("t", 1, error_code=3)
    assert type(p) is Plain and (p.topic, p.partition, p.error_code) == ("t", 1, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.topic = "u"
    m = More("t", 1, more=2)
    assert type(m) is More and (m.topic, m.more, m.base_offset) == ("t", 2, -1)
    assert type(Checked(timeout_ms=1)) is Checked
    with pytest.raises(LocalProtocolError):
        Checked(timeout_ms=-1)
    with pytest.raises(LocalProtocolError):
        Checked(acks=5)


def test_a_class_without_a_builder_stores_through_descriptors(monkeypatch):
    monkeypatch.setattr(frozen, "_builder_for", lambda cls: None)

    @frozen.frozen_dataclass
    class NoBuilder(Message):
        API_KEY: ClassVar[int] = 99
        name: str = "n"
        sizes: dict = dataclasses.field(default_factory=dict)

        def __post_init__(self):
            if self.name == "bad":
                raise ValueError("bad name")

    assert frozen.construction(NoBuilder).builder is None
    assert "_set_name(self, name)" in source_of(NoBuilder.__init__)
    obj = NoBuilder("x", correlation_id=3)
    assert (obj.name, obj.sizes, obj.correlation_id) == ("x", {}, 3)
    assert NoBuilder().sizes is not NoBuilder().sizes
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.name = "y"
    with pytest.raises(ValueError):
        NoBuilder("bad")


def test_a_class_with_more_than_slots_to_fill_keeps_the_dataclass_init():
    @frozen.frozen_dataclass
    class Derived:
        a: int
        b: int = dataclasses.field(init=False, default=0)

        def __post_init__(self):
            object.__setattr__(self, "b", self.a * 2)

    @frozen.frozen_dataclass
    class WithInitVar:
        a: int
        scale: dataclasses.InitVar[int] = 1

        def __post_init__(self, scale):
            object.__setattr__(self, "a", self.a * scale)

    for cls in (Derived, WithInitVar):
        assert frozen.construction(cls) is None
        with pytest.raises(ValueError):
            source_of(cls.__init__)
    assert Derived(2).b == 4 and WithInitVar(2, 3).a == 6
