"""Typed failures of transparency-log data and proofs."""

from __future__ import annotations


class TlogError(Exception):
    """Base class: a transparency-log value or proof was refused."""


class MalformedTlogData(TlogError):
    """Bytes or fields that do not decode as the documented structure."""


class InvalidProof(TlogError):
    """An inclusion or consistency proof does not lead to the claimed root."""


class InvalidTreeHead(TlogError):
    """A signed tree head whose signature, key or fields do not check out."""
