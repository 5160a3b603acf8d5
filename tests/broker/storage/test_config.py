import pytest

from broker.storage import LogConfig
from protocol.errors import InvalidConfigError


def test_defaults_are_kafkas():
    c = LogConfig()
    assert c.segment_bytes == 1 << 30
    assert c.index_interval_bytes == 4096
    assert c.max_message_bytes == 1048588
    assert c.message_timestamp_type == "CreateTime"
    assert c.to_dict()["retention.ms"] == str(7 * 24 * 3600 * 1000)


def test_from_dict_parses_strings_and_accepts_both_key_styles():
    c = LogConfig.from_dict(
        {"segment.bytes": "1024", "segment_ms": 60000, "message.timestamp.type": "LogAppendTime"}
    )
    assert c.segment_bytes == 1024 and c.segment_ms == 60000 and c.log_append_time
    assert c.overrides(LogConfig()) == {
        "segment.bytes": "1024",
        "segment.ms": "60000",
        "message.timestamp.type": "LogAppendTime",
    }


def test_from_dict_applies_on_a_base():
    base = LogConfig(segment_bytes=2048)
    c = LogConfig.from_dict({"retention.ms": "-1"}, base=base)
    assert c.segment_bytes == 2048 and c.retention_ms == -1


def test_to_dict_round_trips():
    c = LogConfig(segment_bytes=5000, cleanup_policy="compact", flush_interval_messages=10)
    assert LogConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"no.such.key": "1"}, "unknown topic config"),
        ({"segment.bytes": "abc"}, "segment.bytes must be an integer"),
        ({"segment.bytes": "1.5"}, "integer"),
        ({"segment.bytes": True}, "integer"),
        ({"segment.bytes": "10"}, "between"),
        ({"segment.bytes": str(1 << 31)}, "between"),
        ({"retention.ms": "-2"}, "retention.ms"),
        ({"message.timestamp.type": "Now"}, "CreateTime or LogAppendTime"),
        ({"cleanup.policy": "forever"}, "cleanup.policy"),
        ({"flush.messages": "0"}, "flush.messages"),
    ],
)
def test_bad_settings_name_the_key(changes, words):
    with pytest.raises(InvalidConfigError, match=words):
        LogConfig.from_dict(changes)


def test_constructor_validates_too():
    with pytest.raises(InvalidConfigError):
        LogConfig(index_interval_bytes=-1)


def test_cleanup_policy_combination_is_normalised():
    assert LogConfig.from_dict({"cleanup.policy": "delete, compact"}).cleanup_policy == "compact,delete"
