"""Issue 25: no module imports a private name (``_x``, or anything from a ``_x`` module)
from outside the package that owns it. `lint-imports` (in CI) checks the layers, private
modules and circles; this adds private *names*, which import-linter does not see."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("infra", "features", "ingest", "training", "slidebank")


def _owner(module: str, name: str) -> str | None:
    """The package that owns ``module.name`` when that is private, else None."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    if not (name.startswith("_") and not name.startswith("__")):
        return None
    is_package = (ROOT.joinpath(*parts) / "__init__.py").exists()
    return module if is_package else ".".join(parts[:-1])


def private_imports() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "deploy" in path.parts:
                continue
            here = ".".join(path.relative_to(ROOT).parent.parts)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                    continue
                if node.module.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    owner = _owner(node.module, alias.name)
                    if owner is not None and not (here == owner or here.startswith(owner + ".")):
                        found.append(
                            f"{path.relative_to(ROOT)}:{node.lineno} imports "
                            f"{node.module}.{alias.name}, private to {owner}"
                        )
    return found


def test_the_checker_sees_a_private_import() -> None:
    assert _owner("features.store._keys", "new_write_id") == "features.store"
    assert _owner("training.figures", "_pyplot") == "training"
    assert _owner("features.store", "FeatureStore") is None


def test_no_module_imports_a_private_name_from_another_package() -> None:
    assert private_imports() == []
