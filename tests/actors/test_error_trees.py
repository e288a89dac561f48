"""The error trees drawn in the docstrings of ``actors`` and
``protocol.framing`` stay true: every exception class is drawn under its
base, and the framing tree names every session check."""

from __future__ import annotations

import importlib
import pkgutil
import re

import actors
import actors.channel  # defines SessionError subclasses of its own
import protocol.framing
from protocol.counter_binding import CounterRefused
from protocol.framing import SessionCheck, SessionError
from protocol.key_custody import EnvelopeError, KeyCustodyError, KeyringError, KeyringRefused

_ENTRY = re.compile(r"^(?P<indent>[ │]*)[├└]── (?P<name>\w+)")


def _tree(docstring: str) -> tuple[str, dict[str, str], list[str]]:
    """(root, {class: parent}, lines) of the first tree diagram in ``docstring``."""
    lines = docstring.split("::\n", 1)[1].splitlines()
    while not lines[0].strip():
        lines.pop(0)
    root = lines[0].split()[0]
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = [(-1, root)]
    drawn: list[str] = [lines[0]]
    for line in lines[1:]:
        if not line.strip():
            break
        drawn.append(line)
        match = _ENTRY.match(line.strip("\n")[4:])  # the diagram is indented four spaces
        if match is None:
            continue
        depth = len(match["indent"])
        while stack[-1][0] >= depth:
            stack.pop()
        parents[match["name"]] = stack[-1][1]
        stack.append((depth, match["name"]))
    return root, parents, drawn


def _actors_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(actors.__path__, "actors."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__.startswith("actors")
            ):
                found[value.__name__] = value
    return found


def test_the_actors_tree_draws_every_exception_under_its_base() -> None:
    assert actors.__doc__ is not None
    root, parents, _ = _tree(actors.__doc__.split("Errors\n------\n", 1)[1])
    assert root == "Exception"
    classes = _actors_exceptions()
    # Drawn, but defined in protocol/ (the formats' errors, which actors re-export).
    from_protocol = (
        SessionError,
        KeyCustodyError,
        KeyringError,
        KeyringRefused,
        EnvelopeError,
        CounterRefused,
    )
    known = {**classes, "Exception": Exception, **{c.__name__: c for c in from_protocol}}
    assert set(classes) <= set(parents), "every exception of the package is drawn"
    for name, parent in parents.items():
        assert known[parent] in known[name].__bases__, f"{name} is not drawn under its base"


def test_the_framing_tree_draws_every_session_error_and_check() -> None:
    doc = protocol.framing.__doc__
    assert doc is not None
    root, parents, drawn = _tree(doc.split("Errors\n------\n", 1)[1])
    assert root == "SessionError"
    subclasses = {cls.__name__: cls for cls in SessionError.__subclasses__()}
    assert set(subclasses) <= set(parents)
    for name, parent in parents.items():
        assert parent == "SessionError"
        assert issubclass(subclasses[name], SessionError)
    # Dotted lower-case words are checks, except the modules named in parentheses.
    named = {
        word
        for word in re.findall(r"\b[a-z_]+\.[a-z_]+\b", "\n".join(drawn))
        if not word.startswith("actors.")
    }
    assert named == {check.value for check in SessionCheck}


def _protocol_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(protocol.__path__, "protocol."):
        if info.name == "protocol.noise.vectors":
            continue  # a command-line runner, not part of the package's API
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__.startswith("protocol")
                and not value.__name__.startswith("_")
            ):
                found[value.__name__] = value
    return found


def test_the_protocol_tree_draws_every_exception_under_its_base() -> None:
    assert protocol.__doc__ is not None
    text = protocol.__doc__.split("Errors\n------\n", 1)[1]
    exception_tree, value_error_tree = text.split("\n    ValueError\n", 1)
    root, parents, _ = _tree(exception_tree)
    assert root == "Exception"
    _, value_parents, _ = _tree("::\n\n    ValueError\n" + value_error_tree)
    classes = _protocol_exceptions()
    drawn = {**parents, **value_parents}
    known = {**classes, "Exception": Exception, "ValueError": ValueError}
    framing_children = {c.__name__ for c in SessionError.__subclasses__()}
    assert set(classes) - framing_children <= set(drawn), "every exception is drawn"
    for name, parent in drawn.items():
        assert known[parent] in known[name].__bases__, f"{name} is not drawn under its base"
