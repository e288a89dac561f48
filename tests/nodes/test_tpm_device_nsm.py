"""Encodings of the NitroTPM NSM path (AWS vendor command 0x20000001).

The path itself needs an EC2 instance with NitroTPM; these tests pin the
request, command and response encodings byte for byte. That the command
reaches a TPM through the NV message buffer is tested against swtpm in
test_tpm_device.py (which answers TPM_RC_COMMAND_CODE).
"""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.tpm import (
    TPM2_CC_AWS_NSM_REQUEST,
    NsmError,
    NsmErrorResponse,
    decode_nsm_response,
    encode_nsm_attestation_request,
    encode_nsm_vendor_command,
)
from nodes.tpm._nsm import parse_tpm_response_code


def test_request_is_the_nsm_api_attestation_variant() -> None:
    request = encode_nsm_attestation_request(nonce=b"\x01\x02", public_key=None, user_data=b"u")
    assert cbor2.loads(request) == {
        "Attestation": {"user_data": b"u", "nonce": b"\x01\x02", "public_key": None}
    }
    # Byte for byte: map(1) "Attestation" map(3) "user_data" h'75' "nonce" h'0102' "public_key" null
    assert request == (
        bytes.fromhex("a1")
        + b"\x6bAttestation"
        + bytes.fromhex("a3")
        + b"\x69user_data"
        + bytes.fromhex("4175")
        + b"\x65nonce"
        + bytes.fromhex("420102")
        + b"\x6apublic_key"
        + bytes.fromhex("f6")
    )


def test_request_fields_are_bounded() -> None:
    with pytest.raises(NsmError):
        encode_nsm_attestation_request(nonce=bytes(1025), public_key=None, user_data=None)


def test_vendor_command_layout() -> None:
    command = encode_nsm_vendor_command(0x01004E00, b"")
    assert TPM2_CC_AWS_NSM_REQUEST == 0x20000001
    assert command == bytes.fromhex(
        "8002"  # TPM_ST_SESSIONS
        "0000001f"  # commandSize = 31
        "20000001"  # TPM2_CC_AWS_NSM_REQUEST
        "01004e00"  # @authHandle: the NV index authorises itself
        "01004e00"  # nvIndex
        "00000009"  # authorizationSize
        "40000009"  # TPM_RS_PW
        "0000"  # nonceCaller: empty
        "00"  # sessionAttributes
        "0000"  # hmac (password): empty
    )
    with_password = encode_nsm_vendor_command(0x01004E00, b"\xaa" * 32)
    assert int.from_bytes(with_password[2:6], "big") == len(with_password) == 31 + 32
    assert with_password[-34:] == bytes.fromhex("0020") + b"\xaa" * 32


def test_attestation_response_is_read_past_padding() -> None:
    response = cbor2.dumps({"Attestation": {"document": b"\x84cose"}})
    buffer = response + b"\xff" * (8192 - len(response))
    assert decode_nsm_response(buffer) == b"\x84cose"


@pytest.mark.parametrize(
    "response",
    [
        {"Attestation": {"document": "text"}},
        {"Attestation": {"document": b""}},
        {"Attestation": {"document": b"x", "extra": 1}},
        {"DescribePCR": {"lock": False, "data": b""}},
        {"Error": "NotACode"},
        {"Attestation": {}, "Error": "InternalError"},
        ["Attestation"],
    ],
)
def test_malformed_responses_are_typed_errors(response: object) -> None:
    with pytest.raises(NsmError):
        decode_nsm_response(cbor2.dumps(response))


def test_error_response_names_the_code() -> None:
    with pytest.raises(NsmErrorResponse) as caught:
        decode_nsm_response(cbor2.dumps({"Error": "InputTooLarge"}) + bytes(100))
    assert caught.value.code == "InputTooLarge"


def test_tpm_response_header_is_checked() -> None:
    assert parse_tpm_response_code(bytes.fromhex("8001 0000000a 00000143")) == 0x143
    for bad in (
        b"",
        bytes.fromhex("8001 0000000b 00000000"),
        bytes.fromhex("c4c4 0000000a 00000000"),
    ):
        with pytest.raises(NsmError):
            parse_tpm_response_code(bad)


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_arbitrary_buffers_never_escape_as_untyped_errors(buffer: bytes) -> None:
    with contextlib.suppress(NsmError):
        decode_nsm_response(buffer)
    with contextlib.suppress(NsmError):
        parse_tpm_response_code(buffer)
