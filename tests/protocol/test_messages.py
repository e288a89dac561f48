"""The envelope codec: round trips for every registered type, strict decoding."""

from __future__ import annotations

import array
import contextlib
import dataclasses
import enum
import importlib
import pkgutil
import struct
from collections.abc import Callable
from typing import Annotated, Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import actors
import nodes
import protocol
import simulations
from protocol.customer_data import REDACTED, CustomerData, CustomerDataNotText
from protocol.e2e import CHUNK_FLAG, FINAL_FLAG
from protocol.messages import (
    I32,
    MAX_NESTING_DEPTH,
    REGISTRY,
    U8,
    U16,
    U64,
    BoolSpec,
    BytesSpec,
    CustomerDataSpec,
    EnumSpec,
    Envelope,
    ErrorCode,
    ErrorReply,
    FloatSpec,
    IntRange,
    IntSpec,
    MaxLen,
    MessageDecodeError,
    MessageDefinitionError,
    MessageEncodeError,
    MessageRegistry,
    OptionalSpec,
    Ping,
    RecordSpec,
    SequenceSpec,
    Spec,
    StrSpec,
)
from protocol.scheduling import AttemptRecord

CANARY = "canary-7f3a9c-do-not-leak"


def _import_all(package: Any) -> None:
    """Import every module of ``package`` so each @message registration runs."""
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            # An optional third-party dependency (e.g. llama_cpp) may be absent;
            # a missing module of our own is a real failure.
            if exc.name is None or exc.name.split(".")[0] in OUR_PACKAGES:
                raise


# Every package that may define messages: their types join the round-trip test
# below without anyone having to list them.
OUR_PACKAGES = {"protocol", "actors", "nodes", "simulations"}
for _package in (protocol, actors, nodes, simulations):
    _import_all(_package)


# -- a test registry exercising every supported field type ---------------------

TEST_REGISTRY = MessageRegistry()


class Colour(enum.StrEnum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass(frozen=True, slots=True)
class Inner:
    label: Annotated[str, MaxLen(16)]
    weight: float
    colour: Colour


@TEST_REGISTRY.message("test.everything")
@dataclasses.dataclass(frozen=True, slots=True)
class Everything:
    small: U8
    signed: I32
    big: int
    flag: bool
    ratio: float
    name: Annotated[str, MaxLen(40)]
    blob: bytes
    prompt: CustomerData
    maybe_prompt: CustomerData | None
    maybe_count: U16 | None
    tags: Annotated[tuple[Annotated[str, MaxLen(8)], ...], MaxLen(6)]
    matrix: list[tuple[U8, ...]]
    inner: Inner
    inners: tuple[Inner, ...]
    maybe_inner: Inner | None
    code: ErrorCode


@TEST_REGISTRY.message("test.empty")
@dataclasses.dataclass(frozen=True, slots=True)
class Empty:
    pass


@TEST_REGISTRY.message("test.one")
@dataclasses.dataclass(frozen=True, slots=True)
class One:
    value: U64


@TEST_REGISTRY.message("test.ordered")
@dataclasses.dataclass(frozen=True, slots=True)
class Ordered:
    low: U8
    high: U8

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low {self.low} above high {self.high}")


class _OddOnly(Exception):
    """An invariant error that is not a ValueError (as a module's own error class)."""


@TEST_REGISTRY.message("test.odd")
@dataclasses.dataclass(frozen=True, slots=True)
class Odd:
    value: U8

    def __post_init__(self) -> None:
        if self.value % 2 == 0:
            raise _OddOnly(f"{self.value} is even")


# -- strategies built from the schema, so new message types are covered ------


def strategy_for(spec: Spec) -> st.SearchStrategy[Any]:
    if isinstance(spec, IntSpec):
        return st.integers(spec.lo, spec.hi)
    if isinstance(spec, BoolSpec):
        return st.booleans()
    if isinstance(spec, FloatSpec):
        # Mostly small values, so records whose invariants bound their floats
        # (probabilities, temperatures) are not rejected nearly every time.
        return st.one_of(
            st.floats(0, 1), st.floats(-4, 4), st.floats(allow_nan=False, allow_infinity=False)
        )
    if isinstance(spec, StrSpec):
        return st.text(max_size=min(spec.max_len, 48))
    if isinstance(spec, BytesSpec):
        if spec.max_len <= 128:
            # Keys, digests and signatures are exactly their limit (records
            # check it, several per record), so that length is drawn mostly.
            exact = st.binary(min_size=spec.max_len, max_size=spec.max_len)
            shorter = st.binary(max_size=min(spec.max_len, 48))
            return st.sampled_from((True,) * 7 + (False,)).flatmap(
                lambda at_limit: exact if at_limit else shorter
            )
        return st.binary(max_size=min(spec.max_len, 48))
    if isinstance(spec, CustomerDataSpec):
        limit = min(spec.max_len, 48)
        return st.one_of(st.text(max_size=limit), st.binary(max_size=limit)).map(CustomerData)
    if isinstance(spec, EnumSpec):
        return st.sampled_from(list(spec.enum_type))
    if isinstance(spec, OptionalSpec):
        return st.none() | strategy_for(spec.inner)
    if isinstance(spec, SequenceSpec):
        return st.lists(strategy_for(spec.item), max_size=min(spec.max_len, 4)).map(spec.container)
    return record_strategy(spec)


#: ChaCha20-Poly1305's tag: the least an AEAD-sealed record carries after its header.
POLY1305_TAG_SIZE = 16


def _sealed_response_records() -> st.SearchStrategy[bytes]:
    """Well-formed-looking e2e response records: counter, a known flag, at least a tag."""
    return st.builds(
        lambda counter, flag, rest: counter.to_bytes(8, "big") + bytes([flag]) + rest,
        st.integers(0, 2**64 - 1),
        st.sampled_from((CHUNK_FLAG, FINAL_FLAG)),
        st.binary(min_size=POLY1305_TAG_SIZE, max_size=48),
    )


#: Fields whose records check a structure of their own inside the bytes, so
#: that random bytes would be refused nearly every time.
FIELD_STRATEGIES: dict[tuple[type, str], Callable[[], st.SearchStrategy[Any]]] = {
    (AttemptRecord, "record"): _sealed_response_records,
}


def record_strategy(spec: RecordSpec) -> st.SearchStrategy[Any]:
    fields = st.tuples(
        *(
            FIELD_STRATEGIES[(spec.record_type, f.name)]()
            if (spec.record_type, f.name) in FIELD_STRATEGIES
            else strategy_for(f.spec)
            for f in spec.fields
        )
    )

    def build(args: tuple[Any, ...]) -> Any:
        try:
            return spec.record_type(*args)
        except Exception:
            # The record's own invariants rejected this combination (any
            # exception class, as the codec treats them).
            assume(False)

    return fields.map(build)


def all_registered() -> list[tuple[MessageRegistry, str]]:
    cases = [(REGISTRY, tag) for tag in sorted(REGISTRY.message_types())]
    cases += [(TEST_REGISTRY, tag) for tag in sorted(TEST_REGISTRY.message_types())]
    return cases


def test_core_messages_are_registered() -> None:
    tags = set(REGISTRY.message_types())
    assert {"core.ping", "core.pong", "core.error"} <= tags


@pytest.mark.parametrize(
    ("registry", "tag"), all_registered(), ids=lambda x: x if isinstance(x, str) else ""
)
@settings(max_examples=60, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data(), request_id=st.integers(0, 2**64 - 1))
def test_round_trip_every_registered_type(
    registry: MessageRegistry, tag: str, data: st.DataObject, request_id: int
) -> None:
    message_type = registry.type_of(tag)
    body = data.draw(record_strategy(registry.schema_of(message_type)))
    envelope = Envelope.wrap(body, request_id=request_id, registry=registry)
    encoded = registry.encode(envelope)
    decoded = registry.decode(encoded)
    assert decoded == envelope
    assert type(decoded.body) is message_type
    # Canonical: one value, one encoding.
    assert registry.encode(decoded) == encoded


def test_customer_data_stays_wrapped_and_keeps_its_kind() -> None:
    body = _everything(prompt=CustomerData(CANARY), maybe_prompt=CustomerData(CANARY.encode()))
    decoded = TEST_REGISTRY.decode(
        TEST_REGISTRY.encode(Envelope.wrap(body, registry=TEST_REGISTRY))
    )
    assert isinstance(decoded.body, Everything)
    assert isinstance(decoded.body.prompt, CustomerData) and decoded.body.prompt.is_text
    assert decoded.body.maybe_prompt is not None and not decoded.body.maybe_prompt.is_text
    assert decoded.body.prompt.reveal_text() == CANARY
    assert CANARY not in repr(decoded)
    assert REDACTED in repr(decoded)


def _everything(**changes: Any) -> Everything:
    base = Everything(
        small=1,
        signed=-2,
        big=3,
        flag=True,
        ratio=0.5,
        name="n",
        blob=b"b",
        prompt=CustomerData("p"),
        maybe_prompt=None,
        maybe_count=7,
        tags=("a", "b"),
        matrix=[(1, 2), ()],
        inner=Inner("i", 1.0, Colour.RED),
        inners=(Inner("j", 2.0, Colour.GREEN),),
        maybe_inner=None,
        code=ErrorCode.NOT_FOUND,
    )
    return dataclasses.replace(base, **changes)


def _raw_everything(**changes: Any) -> list[Any]:
    """The wire array of ``_everything()`` with some positions replaced."""
    names = [f.name for f in dataclasses.fields(Everything)]
    encoded = msgpack.unpackb(
        TEST_REGISTRY.encode(Envelope.wrap(_everything(), registry=TEST_REGISTRY))
    )
    body = list(encoded[3])
    for name, value in changes.items():
        body[names.index(name)] = value
    return body


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _decode_error(registry: MessageRegistry, data: bytes) -> MessageDecodeError:
    with pytest.raises(MessageDecodeError) as info:
        registry.decode(data)
    return info.value


# -- strict decoding: each rule has its named check ---------------------------


@pytest.mark.parametrize(
    ("envelope", "check"),
    [
        ([2, "core.ping", 0, [1]], "envelope.version"),
        ([True, "core.ping", 0, [1]], "envelope.version"),
        ([1, "core.nope", 0, [1]], "envelope.unknown_tag"),
        ([1, b"core.ping", 0, [1]], "envelope.tag"),
        ([1, "core.ping", -1, [1]], "envelope.request_id"),
        ([1, "core.ping", 0], "envelope.shape"),
        ([1, "core.ping", 0, [1], 0], "envelope.shape"),
        ({"v": 1}, "envelope.shape"),
        ([1, "core.ping", 0, []], "field.missing"),
        ([1, "core.ping", 0, [1, 2]], "field.extra"),
        ([1, "core.ping", 0, ["1"]], "field.type"),
        ([1, "core.ping", 0, [True]], "field.type"),
        ([1, "core.ping", 0, [1.0]], "field.type"),
        ([1, "core.ping", 0, [-1]], "field.range"),
        ([1, "core.ping", 0, [None]], "field.type"),
        ([1, "core.ping", 0, [{"nonce": 1}]], "field.type"),
        ([1, "core.error", 0, [99, True]], "field.enum"),
        ([1, "core.error", 0, ["10", True]], "field.type"),
        ([1, "core.error", 0, [10, 1]], "field.type"),
    ],
)
def test_strict_envelope_rules(envelope: Any, check: str) -> None:
    assert _decode_error(REGISTRY, _pack(envelope)).check == check


@pytest.mark.parametrize(
    ("changes", "check", "path"),
    [
        ({"small": 256}, "field.range", "body.small"),
        ({"signed": 2**31}, "field.range", "body.signed"),
        ({"big": 2**63}, "field.range", "body.big"),
        ({"ratio": 1}, "field.type", "body.ratio"),
        ({"name": "x" * 41}, "field.length", "body.name"),
        ({"blob": "text"}, "field.type", "body.blob"),
        ({"prompt": 5}, "field.type", "body.prompt"),
        ({"tags": ["a"] * 7}, "field.length", "body.tags"),
        ({"tags": ["a", "toolongtag"]}, "field.length", "body.tags[1]"),
        ({"matrix": [[1], [2, 300]]}, "field.range", "body.matrix[1][1]"),
        ({"inner": ["i", 1.0]}, "field.missing", "body.inner.colour"),
        ({"inner": ["i", 1.0, "blue"]}, "field.enum", "body.inner.colour"),
        ({"inners": [["i", 1.0, "red", 0]]}, "field.extra", "body.inners[0]"),
        ({"maybe_inner": "x"}, "field.type", "body.maybe_inner"),
    ],
)
def test_errors_name_the_check_and_the_field(
    changes: dict[str, Any], check: str, path: str
) -> None:
    error = _decode_error(
        TEST_REGISTRY, _pack([1, "test.everything", 0, _raw_everything(**changes)])
    )
    assert (error.check, error.path) == (check, path)


def test_record_invariant_failure_is_typed_and_quotes_nothing() -> None:
    error = _decode_error(TEST_REGISTRY, _pack([1, "test.ordered", 0, [201, 7]]))
    assert error.check == "record.invariant"
    assert "201" not in str(error)
    # Whatever exception class the invariant raises, only MessageDecodeError leaves.
    error = _decode_error(TEST_REGISTRY, _pack([1, "test.odd", 0, [202]]))
    assert error.check == "record.invariant"
    assert "202" not in str(error)
    # Stronger than ``from None`` (__suppress_context__): nothing is kept at all.
    assert error.__cause__ is None and error.__context__ is None


def test_customer_data_that_is_not_utf8_reveals_as_bytes_only() -> None:
    # bin on the wire decodes into CustomerData holding arbitrary bytes; asking
    # for text must fail with an error that carries none of them.
    secret = b"\xff" + CANARY.encode()
    body = _everything(prompt=CustomerData(secret))
    decoded = TEST_REGISTRY.decode(
        TEST_REGISTRY.encode(Envelope.wrap(body, registry=TEST_REGISTRY))
    )
    assert isinstance(decoded.body, Everything)
    assert decoded.body.prompt.reveal_bytes() == secret
    with pytest.raises(CustomerDataNotText) as info:
        decoded.body.prompt.reveal_text()
    assert isinstance(info.value, ValueError)
    assert CANARY not in str(info.value) and "0xff" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.parametrize(
    ("data", "check"),
    [
        (b"", "msgpack.syntax"),
        (b"\xc1", "msgpack.syntax"),
        (_pack([1, "core.ping", 0, [1]]) + b"\x00", "msgpack.syntax"),
        (_pack([1, "core.ping", 0, [1]])[:-1], "msgpack.syntax"),
        (b"\x94\x01\xa9core.ping\x00\x91\xd4\x05\x00", "msgpack.syntax"),  # ext type
        (b"\x94\x01\xa9core.ping\x00\x91\xd6\xff\x00\x00\x00\x01", "msgpack.syntax"),  # timestamp
        (b"\x94\x01\xa3\xff\xfe\xfd\x00\x91\x01", "msgpack.syntax"),  # invalid UTF-8
        (b"\x94\x01\xa9core.ping\x00\x91\x81\x01\x02", "msgpack.syntax"),  # int map key
        (b"\x91" * 5000 + b"\xc0", "msgpack.depth"),
    ],
)
def test_malformed_msgpack(data: bytes, check: str) -> None:
    assert _decode_error(REGISTRY, data).check == check


@pytest.mark.parametrize(
    "data",
    [
        # nonce 1 as uint64 instead of a positive fixint
        b"\x94\x01\xa9core.ping\x00\x91\xcf" + struct.pack(">Q", 1),
        # request id 0 as uint8
        b"\x94\x01\xa9core.ping\xcc\x00\x91\x01",
        # the tag as str8 instead of fixstr
        b"\x94\x01\xd9\x09core.ping\x00\x91\x01",
        # the envelope as array16
        b"\xdc\x00\x04\x01\xa9core.ping\x00\x91\x01",
    ],
)
def test_non_canonical_encodings_are_rejected(data: bytes) -> None:
    # Each of these parses to a valid Ping; only the canonical form is accepted.
    assert msgpack.unpackb(data)[3] == [1]
    assert _decode_error(REGISTRY, data).check == "envelope.non_canonical"


def test_float32_is_not_canonical() -> None:
    body = _raw_everything()
    encoded = bytearray(_pack([1, "test.everything", 0, body]))
    float64 = b"\xcb" + struct.pack(">d", 0.5)
    index = encoded.index(float64)
    encoded[index : index + 9] = b"\xca" + struct.pack(">f", 0.5)
    assert _decode_error(TEST_REGISTRY, bytes(encoded)).check == "envelope.non_canonical"


# -- bounds ---------------------------------------------------------------------


def test_size_bound_is_checked_on_both_sides() -> None:
    envelope = Envelope.wrap(_everything(blob=b"\x00" * 2000), registry=TEST_REGISTRY)
    encoded = TEST_REGISTRY.encode(envelope)
    assert TEST_REGISTRY.decode(encoded, max_size=len(encoded)) == envelope
    assert _decode_error_sized(encoded, len(encoded) - 1).check == "envelope.size"
    with pytest.raises(MessageEncodeError) as info:
        TEST_REGISTRY.encode(envelope, max_size=len(encoded) - 1)
    assert info.value.check == "envelope.size"
    # Counted in bytes whatever the buffer: 8-byte items are not one byte each.
    wide = memoryview(array.array("Q", bytes(8 * 200)))
    assert _decode_error_sized(wide, 1000).check == "envelope.size"


def _decode_error_sized(data: bytes | memoryview, max_size: int) -> MessageDecodeError:
    with pytest.raises(MessageDecodeError) as info:
        TEST_REGISTRY.decode(data, max_size=max_size)
    return info.value


def test_declared_length_beyond_the_input_is_refused_without_allocating() -> None:
    # A bin32 header claiming 4 GiB inside a 20-byte message.
    data = b"\x94\x01\xa9core.ping\x00\x91\xc6\xff\xff\xff\xff"
    assert _decode_error(REGISTRY, data).check == "msgpack.syntax"


def test_nesting_deeper_than_the_schema_is_a_type_error() -> None:
    deep: Any = 1
    for _ in range(50):
        deep = [deep]
    assert _decode_error(REGISTRY, _pack([1, "core.ping", 0, [deep]])).check == "field.type"


def test_schema_deeper_than_the_limit_is_refused_at_registration() -> None:
    registry = MessageRegistry()
    nested: Any = U8
    for _ in range(MAX_NESTING_DEPTH):
        nested = tuple[nested, ...]
    deep = dataclasses.make_dataclass("Deep", [("x", nested)], frozen=True)
    with pytest.raises(MessageDefinitionError) as info:
        registry.register("test.deep", deep)
    assert info.value.check == "schema.depth"
    shallow = dataclasses.make_dataclass(
        "Shallow", [("x", tuple[tuple[U8, ...], ...])], frozen=True
    )
    registry.register("test.shallow", shallow)


# -- encoding refuses what decoding would refuse -------------------------------


@pytest.mark.parametrize(
    ("changes", "check", "path"),
    [
        ({"small": 256}, "field.range", "body.small"),
        ({"small": True}, "field.type", "body.small"),
        ({"ratio": float("nan")}, "field.range", "body.ratio"),
        ({"ratio": float("inf")}, "field.range", "body.ratio"),
        ({"name": CANARY * 3}, "field.length", "body.name"),
        ({"blob": bytearray(b"x")}, "field.type", "body.blob"),
        ({"prompt": CANARY}, "field.type", "body.prompt"),
        ({"tags": ["a"]}, "field.type", "body.tags"),
        ({"inners": (Inner("x", 1.0, "red"),)}, "field.type", "body.inners[0].colour"),  # type: ignore[arg-type]
        ({"code": 4}, "field.type", "body.code"),
    ],
)
def test_encode_refuses_invalid_values(changes: dict[str, Any], check: str, path: str) -> None:
    with pytest.raises(MessageEncodeError) as info:
        TEST_REGISTRY.encode(Envelope.wrap(_everything(**changes), registry=TEST_REGISTRY))
    assert (info.value.check, info.value.path) == (check, path)
    assert CANARY not in str(info.value)


def test_encode_refuses_lone_surrogates() -> None:
    with pytest.raises(MessageEncodeError) as info:
        TEST_REGISTRY.encode(Envelope.wrap(_everything(name="\ud800"), registry=TEST_REGISTRY))
    assert info.value.check == "msgpack.pack"
    # The failed attempt leaves nothing behind in the reused packer.
    envelope = Envelope.wrap(Ping(3))
    assert REGISTRY.encode(envelope) == b"\x94\x01\xa9core.ping\x00\x91\x03"


def test_envelope_tag_must_match_the_body() -> None:
    with pytest.raises(MessageEncodeError) as info:
        REGISTRY.encode(Envelope(1, "core.pong", 0, Ping(1)))
    assert info.value.check == "envelope.tag_mismatch"
    with pytest.raises(MessageEncodeError) as info:
        REGISTRY.encode(Envelope(1, "core.ping", 0, object()))
    assert info.value.check == "envelope.body_type"
    with pytest.raises(MessageEncodeError):
        REGISTRY.encode(Envelope(2, "core.ping", 0, Ping(1)))
    with pytest.raises(MessageEncodeError):
        REGISTRY.encode(Envelope(1, "core.ping", 2**64, Ping(1)))


# -- errors never carry values --------------------------------------------------


def test_decode_errors_never_quote_values() -> None:
    cases = [
        _raw_everything(name=CANARY * 2),
        _raw_everything(prompt=[CANARY]),
        _raw_everything(small=CANARY),
        _raw_everything(tags=[CANARY]),
        _raw_everything(code=CANARY),
    ]
    for body in cases:
        error = _decode_error(TEST_REGISTRY, _pack([1, "test.everything", 0, body]))
        assert CANARY not in str(error)
        assert error.__cause__ is None
    unknown = _decode_error(TEST_REGISTRY, _pack([1, "canary.tag_do_not_leak", 0, []]))
    assert "canary" not in str(unknown)


# -- arbitrary input only ever raises the codec's own error --------------------


def _decode_or_typed_error(registry: MessageRegistry, data: bytes) -> None:
    with contextlib.suppress(MessageDecodeError):
        registry.decode(data)


@settings(max_examples=400)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    _decode_or_typed_error(REGISTRY, data)
    _decode_or_typed_error(TEST_REGISTRY, data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1).filter(lambda i: -(2**63) <= i < 2**64)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    tag=st.sampled_from(
        [*sorted(REGISTRY.message_types()), *sorted(TEST_REGISTRY.message_types()), "x"]
    ),
    request_id=st.integers(0, 2**64 - 1),
    body=msgpack_values,
)
def test_well_formed_msgpack_of_any_shape_raises_only_decode_errors(
    tag: str, request_id: int, body: Any
) -> None:
    data = _pack([1, tag, request_id, body])
    _decode_or_typed_error(REGISTRY, data)
    _decode_or_typed_error(TEST_REGISTRY, data)


@settings(max_examples=200)
@given(data=st.data())
def test_mutated_valid_encodings_raise_only_decode_errors(data: st.DataObject) -> None:
    body = data.draw(record_strategy(TEST_REGISTRY.schema_of(Everything)))
    encoded = bytearray(TEST_REGISTRY.encode(Envelope.wrap(body, registry=TEST_REGISTRY)))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    _decode_or_typed_error(TEST_REGISTRY, bytes(encoded[:cut]))
    _decode_or_typed_error(TEST_REGISTRY, bytes(encoded))


# -- definitions ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Frozen:
    x: U8


@dataclasses.dataclass
class _Mutable:
    x: U8


@dataclasses.dataclass(frozen=True)
class _Unsupported:
    x: dict[str, int]


@dataclasses.dataclass(frozen=True)
class _TwoTypeUnion:
    x: int | str


@dataclasses.dataclass(frozen=True)
class _BadMarker:
    x: Annotated[str, IntRange(0, 1)]


@dataclasses.dataclass(frozen=True)
class _Recursive:
    child: _Recursive | None


@dataclasses.dataclass(frozen=True)
class _FixedTuple:
    x: tuple[int, str]


class _MixedEnum(enum.Enum):
    A = 1
    B = "b"


@dataclasses.dataclass(frozen=True)
class _MixedEnumField:
    x: _MixedEnum


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (_Mutable, "schema.not_frozen"),
        (_Unsupported, "schema.unsupported_type"),
        (_TwoTypeUnion, "schema.union"),
        (_BadMarker, "schema.marker"),
        (_Recursive, "schema.recursive"),
        (_FixedTuple, "schema.tuple"),
        (_MixedEnumField, "schema.enum_values"),
        (int, "schema.not_dataclass"),
    ],
)
def test_unsupported_definitions_are_refused(cls: type, check: str) -> None:
    with pytest.raises(MessageDefinitionError) as info:
        MessageRegistry().register("test.bad", cls)
    assert info.value.check == check


def test_tags_and_types_register_once() -> None:
    registry = MessageRegistry()
    registry.register("test.frozen", _Frozen)
    with pytest.raises(MessageDefinitionError, match=r"registry\.duplicate_tag"):
        registry.register("test.frozen", One)
    with pytest.raises(MessageDefinitionError, match=r"registry\.duplicate_type"):
        registry.register("test.other", _Frozen)
    for bad in ["", "Upper.case", "trailing.", "a..b", "1abc", "x" * 65, "sp ace"]:
        with pytest.raises(MessageDefinitionError, match=r"registry\.tag_syntax"):
            registry.register(bad, One)


def test_error_reply_round_trip_and_codes_are_stable() -> None:
    envelope = Envelope.wrap(ErrorReply(ErrorCode.OVERLOADED, retryable=True), request_id=9)
    encoded = REGISTRY.encode(envelope)
    assert encoded == b"\x94\x01\xaacore.error\x09\x92\x06\xc3"
    assert REGISTRY.decode(encoded) == envelope
