"""What every Ferry message class is built from: the ``Message`` base and its decorator.

``Message`` carries the class-level ``API_KEY`` and ``IS_RESPONSE`` and the
keyword-only ``correlation_id``, a frame field (``_frame_field``): it travels
in the frame header, not in the msgpack body. ``_msg`` makes a class a frozen,
slotted dataclass with a fast constructor (``protocol.frozen``). The message
classes themselves are in ``protocol.messages`` and, for consumer groups,
``protocol.group_messages``; this module is apart so that both can import it.
"""

from __future__ import annotations

from dataclasses import field
from typing import ClassVar

from .frozen import frozen_dataclass

_msg = frozen_dataclass  # dataclass(frozen=True, slots=True) with a faster __init__


def _frame_field(default=0):
    return field(default=default, kw_only=True, metadata={"frame": True})


@_msg
class Message:
    API_KEY: ClassVar[int] = -1
    IS_RESPONSE: ClassVar[bool] = False
    correlation_id: int = _frame_field()
