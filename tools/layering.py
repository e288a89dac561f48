"""A contract type for import-linter: private modules stay inside their package.

A module whose last name starts with one underscore (``actors._core``,
``nodes.release._keyfiles``) is an implementation detail of its parent package. Only
modules inside that parent may import it; everyone else goes through the
public surface the parent re-exports on purpose (``actors``, ``actors.lowlevel``).

Used from ``.importlinter`` (``contract_types = private: layering.PrivateModulesContract``);
``tools/test`` puts this folder on ``PYTHONPATH`` when it runs ``lint-imports``.
"""

from __future__ import annotations

from typing import Any

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _private_owner(module: str) -> str | None:
    """The package that owns ``module`` if some part of its name is private.

    ``a.b._c.d`` is owned by ``a.b``: only modules under ``a.b`` may import it.
    Dunder names (``__init__``, ``__main__``) are not private.
    """
    parts = module.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__") and index > 0:
            return ".".join(parts[:index])
    return None


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class PrivateModulesContract(Contract):
    """Nothing outside a package imports its ``_private`` modules."""

    containers = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        violations: list[dict[str, Any]] = []
        roots = tuple(self.containers)  # type: ignore[call-overload]
        for imported in sorted(graph.modules):
            owner = _private_owner(imported)
            if owner is None or not any(_inside(imported, root) for root in roots):
                continue
            for importer in sorted(graph.find_modules_that_directly_import(imported)):
                if _inside(importer, owner):
                    continue
                details = graph.get_import_details(importer=importer, imported=imported)
                lines = sorted({detail["line_number"] for detail in details})
                violations.append(
                    {"importer": importer, "imported": imported, "owner": owner, "lines": lines}
                )
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            lines = ", ".join(f"l.{line}" for line in violation["lines"])
            output.print_error(
                f"{violation['importer']} imports {violation['imported']} ({lines}),"
                f" private to {violation['owner']}",
                bold=False,
            )
            output.new_line()
