"""The error table: one exception class per code, looked up by code."""

from __future__ import annotations

import pytest

from protocol import errors
from protocol.errors import (
    ApiError,
    ErrorCode,
    FerryError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    RetriableError,
    UnknownServerError,
    raise_for_code,
)


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _classes_by_code() -> dict[int, list[type]]:
    by_code: dict[int, list[type]] = {}
    for cls in set(_all_subclasses(ApiError)):
        if "code" in cls.__dict__:
            by_code.setdefault(int(cls.code), []).append(cls)
    return by_code


def test_every_code_has_exactly_one_class():
    by_code = _classes_by_code()
    for code in ErrorCode:
        if code is ErrorCode.NONE:
            assert code not in by_code
        else:
            assert len(by_code.get(int(code), [])) == 1, code
    assert set(by_code) == {int(c) for c in ErrorCode if c is not ErrorCode.NONE}


def test_abstract_bases_claim_no_code():
    assert "code" not in RetriableError.__dict__
    assert ApiError.for_code(ApiError.code) is UnknownServerError


@pytest.mark.parametrize("code", [c for c in ErrorCode if c is not ErrorCode.NONE], ids=lambda c: c.name)
def test_for_code_round_trips(code):
    cls = ApiError.for_code(code)
    assert cls.code == code and isinstance(cls.code, ErrorCode)
    assert ApiError.for_code(int(code)) is cls
    exc = ApiError.from_code(code)
    assert type(exc) is cls and str(exc) == cls.description
    assert str(ApiError.from_code(code, "detail")) == "detail"
    with pytest.raises(cls):
        raise_for_code(int(code))
    assert cls.description


@pytest.mark.parametrize("code", [9999, -2, 11, 2**40])
def test_unknown_code_is_unknown_server_error(code):
    assert ApiError.for_code(code) is UnknownServerError
    assert type(ApiError.from_code(code)) is UnknownServerError


def test_no_error():
    assert raise_for_code(0) is None
    assert raise_for_code(ErrorCode.NONE) is None


@pytest.mark.parametrize("code", [
    ErrorCode.REQUEST_TIMED_OUT,
    ErrorCode.NETWORK_EXCEPTION,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.CORRUPT_MESSAGE,
])
def test_retriable(code):
    cls = ApiError.for_code(code)
    assert cls.retriable is True and issubclass(cls, RetriableError)


@pytest.mark.parametrize("code", [
    ErrorCode.TOPIC_ALREADY_EXISTS,
    ErrorCode.INVALID_TOPIC,
    ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.MESSAGE_TOO_LARGE,
    ErrorCode.UNKNOWN_SERVER_ERROR,
])
def test_not_retriable(code):
    assert ApiError.for_code(code).retriable is False


def test_retriable_flag_agrees_with_the_hierarchy():
    for code in ErrorCode:
        if code is not ErrorCode.NONE:
            cls = ApiError.for_code(code)
            assert cls.retriable == issubclass(cls, RetriableError), code


def test_hierarchy():
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(ProtocolError, FerryError) and issubclass(ApiError, FerryError)
    assert not issubclass(ProtocolError, ApiError)


def test_codes_are_unique_and_match_kafka_where_named_alike():
    assert len({int(c) for c in ErrorCode}) == len(ErrorCode)
    kafka = {"OFFSET_OUT_OF_RANGE": 1, "CORRUPT_MESSAGE": 2, "UNKNOWN_TOPIC_OR_PARTITION": 3,
             "NOT_LEADER_OR_FOLLOWER": 6, "REQUEST_TIMED_OUT": 7, "MESSAGE_TOO_LARGE": 10,
             "TOPIC_ALREADY_EXISTS": 36, "UNSUPPORTED_VERSION": 35, "INVALID_REQUEST": 42}
    for name, number in kafka.items():
        assert ErrorCode[name] == number


def test_module_exports_one_class_per_code():
    names = [n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, ApiError)
             and v is not ApiError and "code" in v.__dict__]
    assert len(names) == len(ErrorCode) - 1
