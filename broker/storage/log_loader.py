"""Opening a partition directory: which segments exist, which to check, what to drop.

Theory of operation
-------------------
A partition directory holds segments named by base offset (see ``paths``).
Loading it:

1. removes leftovers of interrupted operations: temporary files (``*.tmp``),
   segment files marked ``.deleted`` (retention or a swap had doomed them),
   ``.cleaned`` files (a cleaning that never committed; the segments it was
   replacing are intact), and index files whose ``.log`` is gone;
   and completes an interrupted swap: a ``<base>.log.swap`` was fsynced
   before it got that name, so it replaces every segment whose base offset
   lies in [base, its next offset) (Kafka's rule), and takes its final name;
   an index ``.swap`` without its ``.log.swap`` is dropped (rebuilt later);
2. opens the segments in offset order. After an unclean shutdown
   (``recover=True``) the newest segment is fully checked batch by batch;
   any other segment is checked fully only if its index files are missing or
   fail their consistency checks (see ``Segment.open``). After a clean
   shutdown every segment only loads;
3. keeps the log contiguous: if checking a segment cut bytes off its end, or a
   segment starts below the end of the one before it, that segment ends the
   log and every later segment is deleted (Kafka's LogLoader does the same:
   data after a hole cannot be trusted to belong after it);
4. creates an empty segment at offset 0 for a new (empty) directory.

Known limit: after an OS crash, a segment rolled less than one flush before
the crash is only header-checked unless its indexes are damaged too; Kafka
avoids this with a persisted recovery point.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import paths
from .batch_reader import MAX_RELATIVE_OFFSET, verified_batches
from .fsio import fsync_dir
from .segment import Segment

log = logging.getLogger(__name__)


def load_segments(directory: Path, index_interval_bytes: int, *, recover: bool) -> list[Segment]:
    """The segments of the partition in ``directory`` (created if missing), oldest first.

    Blocks on disk I/O; raises OSError.
    """
    directory.mkdir(parents=True, exist_ok=True)
    bases = _clean_directory(directory)
    segments: list[Segment] = []
    for i, base in enumerate(bases):
        last = i == len(bases) - 1
        if segments and base < segments[-1].next_offset:
            log.warning(
                "%s: segment %d overlaps the previous one (which ends at %d): dropping it and later ones",
                directory, base, segments[-1].next_offset,
            )
            _delete_from(directory, bases[i:])
            break
        seg = Segment.open(directory, base, index_interval_bytes, recover=recover and last)
        if not last:
            seg.release_file()
        segments.append(seg)
        if seg.truncated_bytes and not last:
            log.warning("%s: segment %d was cut short: dropping the later segments", directory, base)
            _delete_from(directory, bases[i + 1 :])
            break
    if not segments:
        segments.append(Segment.create(directory, 0, index_interval_bytes))
    return segments


def _clean_directory(directory: Path) -> list[int]:
    """Remove leftovers, complete swaps; return the base offsets of the ``.log`` files, sorted."""
    swaps: dict[int, dict[str, Path]] = {}
    for entry in directory.iterdir():
        suffixed = paths.parse_suffixed_segment_file(entry)
        if suffixed is None:
            continue
        base, kind, suffix = suffixed
        if suffix == paths.SWAP_SUFFIX:
            swaps.setdefault(base, {})[kind] = entry
        else:
            log.info("%s: removing the leftover of an interrupted %s", entry,
                     "deletion" if suffix == paths.DELETED_SUFFIX else "cleaning")
            entry.unlink(missing_ok=True)
    for base in sorted(swaps):
        _complete_swap(directory, base, swaps[base])
    if swaps:
        fsync_dir(directory)

    logs: set[int] = set()
    indexes: list[tuple[int, Path]] = []
    for entry in directory.iterdir():
        if paths.is_temp_file(entry):
            log.info("%s: removing leftover temporary file", entry)
            entry.unlink(missing_ok=True)
            continue
        parsed = paths.parse_segment_file(entry)
        if parsed is None:
            continue
        base, kind = parsed
        if kind == "log":
            logs.add(base)
        else:
            indexes.append((base, entry))
    for base, entry in indexes:
        if base not in logs:
            log.info("%s: removing index without a log", entry)
            entry.unlink(missing_ok=True)
    return sorted(logs)


def _delete_from(directory: Path, bases: list[int]) -> None:
    for base in reversed(bases):
        for path in paths.segment_files(directory, base):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _complete_swap(directory: Path, base: int, files: dict[str, Path]) -> None:
    """Finish replacing segments with the cleaned segment ``files`` (kind -> ``.swap`` path)."""
    log_swap = files.get("log")
    if log_swap is None:
        for path in files.values():
            path.unlink(missing_ok=True)
        return
    end = base
    fd = os.open(log_swap, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for _, h in verified_batches(fd, 0, size, base, base + MAX_RELATIVE_OFFSET):
            end = h.next_offset
    finally:
        os.close(fd)
    replaced = []
    for entry in directory.iterdir():
        parsed = paths.parse_segment_file(entry)
        if parsed is not None and parsed[1] == "log" and base <= parsed[0] < max(end, base + 1):
            replaced.append(parsed[0])
    log.warning(
        "%s: completing an interrupted cleaning: segment %d replaces %s",
        directory, base, ", ".join(map(str, sorted(replaced))) or "nothing",
    )
    _delete_from(directory, sorted(replaced))
    final_log, final_index, final_time = paths.segment_files(directory, base)
    os.replace(log_swap, final_log)
    for kind, final in (("index", final_index), ("timeindex", final_time)):
        if kind in files:
            os.replace(files[kind], final)
        else:
            final.unlink(missing_ok=True)  # possibly stale: rebuilt from the log
