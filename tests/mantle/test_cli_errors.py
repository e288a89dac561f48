"""The client's typed errors as the ``mantle`` commands name them.

A refusal names its check, an HTTP status or a retry delay, and never the
text the server sent with it (an error body is the server's words, and could
echo anything).
"""

from __future__ import annotations

import pytest

from mantle import APIError, AttestationError, ClientCheck, ClientTimeout, RateLimited
from mantle._cli_trust import CheckFailed, UnusableInput, failure_of
from protocol.attestation import Check

SERVER_TEXT = "CANARY-server-text-91ad"


def test_a_rate_limit_names_its_retry_delay() -> None:
    failed = failure_of(RateLimited(SERVER_TEXT, 7.0))
    assert failed is not None and failed.check == "api.rate_limited"
    assert "retry after 7 s" in failed.detail and SERVER_TEXT not in str(failed)
    unknown = failure_of(RateLimited(SERVER_TEXT, None))
    assert unknown is not None and "retry after unknown" in unknown.detail


def test_an_api_error_names_its_status_not_its_message() -> None:
    failed = failure_of(APIError(503, SERVER_TEXT, type="overloaded"))
    assert failed is not None and failed.check == "api.http_503"
    assert failed.detail == "HTTP 503 (overloaded)"


def test_an_attestation_error_names_the_step_and_the_documents_check() -> None:
    error = AttestationError(ClientCheck.NODE_DOCUMENT, "node x", document_check=Check.PCR_POLICY)
    failed = failure_of(error)
    assert failed is not None and failed.check == "attestation.node.document/pcr_policy"
    timeout = failure_of(ClientTimeout("nodes"))
    assert timeout is not None and timeout.check == "timeout"


def test_a_group_of_one_error_is_judged_by_it() -> None:
    grouped = ExceptionGroup("task group", [RateLimited(SERVER_TEXT, 1.0)])
    failed = failure_of(grouped)
    assert failed is not None and failed.check == "api.rate_limited"
    own = CheckFailed("models.none", "the cluster lists no model")
    assert failure_of(ExceptionGroup("task group", [own])) is own
    with pytest.raises(UnusableInput):
        failure_of(ExceptionGroup("task group", [UnusableInput("no API key")]))
    assert failure_of(ValueError("a bug")) is None
