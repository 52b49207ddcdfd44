"""The Redis record codec: the published format of docs/redis_format.md (versions 1 and 2).

This package is the one place that knows the byte layout: ``format`` (versions,
field lists, errors, typed field access), ``keys``, ``user`` (the user record)
and ``global_record`` (the global record and its publish); every read and
write of a record goes through it, and the service's Lua scripts take their
field lists from it. The streaming service (the only writer) encodes with
it; the reader library (:mod:`streamer.reader.lookup`) decodes with it. It imports numpy and the standard library only (no torch, no
Kafka), so any reader service can use it.

Layout in brief (the doc is the contract):

* user ``{prefix}:u:{<user_id>}``: HASH ``v d mean cov n ts et gv p o hist``;
* global ``{prefix}:g:{<version>}``: HASH ``v gv d k biases transform b0 sigma
  prior_mean prior_cov n_videos video_ids video_mean video_cov video_scale ts``;
* ``{prefix}:g:current``: STRING, the newest complete global version.

Integers and floats are ASCII decimal text; arrays are little-endian float32,
row-major, no header. Arrays decode to float64 (the model computes in float64;
storing float32 costs ~1e-7 relative precision, far below posterior spreads).

>>> user_key("hpmf", 42), global_key("hpmf", 7), global_current_key("hpmf")
('hpmf:u:{42}', 'hpmf:g:{7}', 'hpmf:g:current')
>>> rec = UserRecord(np.zeros(2), np.eye(2), 1, 5, 4, 3, 0, 9, [("v1", 2.5, 1)])
>>> decode_user_record(encode_user_record(rec)) == rec
True
"""

import numpy as np  # noqa: F401 (the doctest above uses it)

from streamer.reader.redis_record.format import (
    F32,
    GLOBAL_CHOICE_FIELDS,
    GLOBAL_FIELDS,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    USER_CHOICE_FIELDS,
    USER_FIELDS,
    CorruptRecordError,
    RecordError,
    SchemaVersionError,
    f32,
    float_text,
    int_text,
    same_optional,
)
from streamer.reader.redis_record.global_record import (
    GlobalRecord,
    decode_global_record,
    encode_global_record,
    global_record_from_snapshot,
    with_choice,
    write_global_record,
)
from streamer.reader.redis_record.keys import (
    global_current_key,
    global_key,
    global_prefix,
    is_cluster_client,
    user_key,
)
from streamer.reader.redis_record.user import (
    USER_READ_FIELDS,
    UserReadBack,
    UserRecord,
    decode_user_read,
    decode_user_record,
    encode_user_record,
    encode_user_records,
    queue_user_record,
    read_applied_offset,
    read_user_record,
    user_field_names,
    user_record_from_state,
    user_state_from_record,
)

__all__ = [
    "USER_READ_FIELDS",
    "UserReadBack",
    "decode_user_read",
    "CorruptRecordError",
    "F32",
    "GLOBAL_CHOICE_FIELDS",
    "GLOBAL_FIELDS",
    "GlobalRecord",
    "RecordError",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "SchemaVersionError",
    "USER_CHOICE_FIELDS",
    "USER_FIELDS",
    "UserRecord",
    "decode_global_record",
    "decode_user_record",
    "encode_global_record",
    "encode_user_record",
    "encode_user_records",
    "f32",
    "float_text",
    "global_current_key",
    "global_key",
    "global_prefix",
    "global_record_from_snapshot",
    "int_text",
    "is_cluster_client",
    "queue_user_record",
    "read_applied_offset",
    "read_user_record",
    "same_optional",
    "user_field_names",
    "user_key",
    "user_record_from_state",
    "user_state_from_record",
    "with_choice",
    "write_global_record",
]
