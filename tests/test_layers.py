"""The house's plan, held by machines: import-linter contracts (pyproject.toml) and no module
reaching into another module's private names."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgeprune"


def test_import_linter_contracts_hold() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    assert Path(lint).exists(), "import-linter is missing: bash scripts/setup.sh --test installs it"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "BROKEN" not in out.stdout


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def private_imports(path: Path, source: str | None = None) -> list[str]:
    """``from edgeprune.x import _y`` / ``import edgeprune.x._y`` / ``mod._y`` on an imported
    edgeprune module, where the private thing belongs to another module. A private *module*
    may be imported from inside its own package (that is what private modules are for)."""
    module = _module_name(path)
    package = _package_of(module, path)
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    found: list[str] = []
    imported_modules: dict[str, str] = {}

    def check_dotted(dotted: str, line: int) -> None:
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            if _is_private(part):
                owner = ".".join(parts[:i])
                if not (package == owner or package.startswith(owner + ".")):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {dotted}")
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgeprune"):
            check_dotted(node.module, node.lineno)
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _is_module(full):
                    check_dotted(full, node.lineno)
                    imported_modules[alias.asname or alias.name] = full
                elif _is_private(alias.name) and node.module != module:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {full}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("edgeprune"):
                    check_dotted(alias.name, node.lineno)
                    if alias.asname:
                        imported_modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules and _is_private(node.attr)):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                         f"{imported_modules[node.value.id]}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in private_imports(path)]
    assert not found, "private names used outside their module:\n" + "\n".join(found)


def _test_names(module: str) -> set[str]:
    """The test-file names that test ``module``: every run of its dotted parts joined by ``_``
    (``edgeprune.cli._output`` -> ``cli_output``, ``output``, ``cli``, ...), so ``test_fit.py``
    tests the fit package's modules and ``test_cli_output.py`` the module ``cli._output``."""
    parts = [part.lstrip("_") for part in module.split(".")]
    return {"_".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)}


def test_tests_reach_only_into_the_privates_of_the_module_they_test() -> None:
    """``tests/test_X.py`` may use the private names of module (or package) X (``test_quiet`` ->
    ``artifacts._quiet``, ``test_cli_output`` -> ``cli._output``, ``test_fit`` -> ``fit.*``); of
    no other module."""
    found = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tested = path.stem.removeprefix("test_")
        for hit in private_imports(path):
            dotted = hit.rsplit(": ", 1)[1]
            parts = dotted.split(".")
            owner = ".".join(parts[:next(i for i, p in enumerate(parts) if _is_private(p)) + 1])
            owner_module = owner if _is_module(owner) else owner.rpartition(".")[0]
            if tested not in _test_names(owner_module):
                found.append(hit)
    assert not found, "tests using another module's private names:\n" + "\n".join(found)


def test_the_private_name_check_can_fail() -> None:
    source = ("from edgeprune.pruning.engine import _quiet\n"
              "from edgeprune.data import _spec\n"
              "from edgeprune.pruning import engine\nengine._forward\n")
    hits = private_imports(PACKAGE / "fit" / "probe.py", source)
    assert len(hits) == 3, hits
    # inside its own package a private module is fine
    inside = private_imports(PACKAGE / "data" / "probe.py", "from edgeprune.data import _spec\n")
    assert inside == []


def test_which_test_files_may_reach_into_a_module() -> None:
    assert {"fit", "candidates", "fit_candidates"} <= _test_names("edgeprune.fit.candidates")
    assert "engine" not in _test_names("edgeprune.fit.candidates")
    assert "cli_output" in _test_names("edgeprune.cli._output")
