"""The actor package's layout holds: code outside ``actors`` uses only the
public surfaces (``actors``, ``actors.lowlevel``, ``actors.remote``, ...),
the core never imports the remote layer, and :class:`ActorSystem` carries no
remote-messaging hooks in its public interface."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from actors import ActorSystem
from actors.remote import RemoteLayer
from nodes.random import SystemRandom
from simulations.kernel import Kernel, SimDriver

REPO_ROOT = Path(__file__).resolve().parents[2]
# The private subpackages of actors (the runtime core, the remote layer),
# found rather than listed so that a new one is covered too.
PRIVATE = tuple(
    f"actors.{entry.name}"
    for entry in sorted((REPO_ROOT / "actors").iterdir())
    if entry.is_dir() and entry.name.startswith("_") and entry.name != "__pycache__"
)
CORE = ActorSystem.__module__.rpartition(".")[0]
REMOTE = RemoteLayer.__module__.rpartition(".")[0]


def _python_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if not any(part.startswith(".") for part in path.relative_to(REPO_ROOT).parts):
            yield path


def _imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, wherever the import stands (including
    ``if TYPE_CHECKING:`` blocks and function bodies)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_nothing_outside_actors_imports_its_private_packages() -> None:
    assert {CORE, REMOTE} <= set(PRIVATE)
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {module}"
        for path in _python_files(REPO_ROOT)
        if path.relative_to(REPO_ROOT).parts[0] != "actors"
        for line, module in _imported_modules(path)
        if any(_is_under(module, private) for private in PRIVATE)
    ]
    assert offenders == []


def test_the_core_does_not_import_the_remote_layer() -> None:
    core = REPO_ROOT.joinpath(*CORE.split("."))
    assert core.is_dir()
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {module}"
        for path in _python_files(core)
        for line, module in _imported_modules(path)
        if _is_under(module, REMOTE) or _is_under(module, "actors.remote")
    ]
    assert offenders == []


def test_actor_system_has_no_public_remote_hooks() -> None:
    # The inbound side of remote messaging once was public methods of the
    # system; the remote layer now reaches it only through its private inbox.
    former_hooks = {
        "remote",
        "deliver_local",
        "complete",
        "fail_pending_to",
        "remote_monitors_lost",
        "add_remote_monitor",
        "remove_remote_monitors",
        "deliver_down_from",
    }
    system = ActorSystem("a", SimDriver(Kernel()), random=SystemRandom())
    public = {name for name in dir(system) if not name.startswith("_")}
    assert public & former_hooks == set()
