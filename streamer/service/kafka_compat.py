"""One fix to kafka-python's record parsing, applied when the worker starts.

kafka-python decodes a record header's key as strict UTF-8 while parsing a
fetched batch. A record whose header key is not UTF-8 (a producer that writes
raw bytes there; the protocol calls it a string but the broker does not
check) made every ``poll()`` raise ``CorruptRecordError``, and the consumer
never got past it, nor past the records after it in the same batch: a poison
record that stopped its partition for good, on every restart. Shown with a
record produced by tests/test_stream_hostile.py.

The patch makes that one decode lenient (invalid bytes become U+FFFD): the
record is delivered and handled like any other (the worker does not read
headers). It is applied by rewriting only that call in kafka-python's own
``DefaultRecordBatch._read_msg``, so nothing else of the parser changes; if
the installed kafka-python does not have that exact call (another version),
nothing is patched and a warning says so.
"""

from __future__ import annotations

import inspect
import logging
import textwrap

log = logging.getLogger(__name__)

_STRICT = 'h_key = buffer[pos: pos + h_key_len].decode("utf-8")'
_LENIENT = 'h_key = buffer[pos: pos + h_key_len].decode("utf-8", "replace")'
_patched = False


def lenient_header_keys() -> bool:
    """Patch kafka-python once; True if the parser is lenient now."""
    global _patched
    if _patched:
        return True
    from kafka.record import default_records

    cls = default_records.DefaultRecordBatch
    try:
        source = textwrap.dedent(inspect.getsource(cls._read_msg))
    except (OSError, TypeError):
        source = ""
    if source.count(_STRICT) != 1:
        log.warning(
            "kafka-python's header parsing is not the one known; a record with a non-UTF-8 "
            "header key may stop its partition",
            extra={"kafka_python": getattr(default_records, "__name__", "")},
        )
        return False
    namespace: dict[str, object] = {}
    exec(
        compile(source.replace(_STRICT, _LENIENT), default_records.__file__, "exec"),
        vars(default_records),
        namespace,
    )  # noqa: S102
    cls._read_msg = namespace["_read_msg"]  # type: ignore[method-assign]
    _patched = True
    return True
