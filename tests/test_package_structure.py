"""The package's shape: no import cycles (module-level or inside functions), no oversized modules or
functions beyond the listed exceptions. Reads the sources with ``ast``; imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "speechbench"

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 120
# Modules and functions allowed over the limits, each with the reason it cannot be split. Empty since the
# sections of the benchmarks and reports moved to modules of their own (issue 15); a new entry needs a reason.
MODULE_EXCEPTIONS: dict[str, str] = {}
FUNCTION_EXCEPTIONS: dict[str, str] = {}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Package modules this module imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a package's own parents do not count
                found.add(t)
    return found


def test_no_import_cycles():
    mods = sources()
    graph = {m: imports_of(p, m, set(mods)) for m, p in mods.items()}
    # A package __init__ re-exporting its submodules is not a cycle with them: drop __init__ -> child edges
    # only for the purpose of cycle finding among implementation modules.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n.startswith(m + "."):
                continue
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_module_and_function_sizes():
    too_big, too_long = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        text = path.read_text()
        n = text.count("\n")
        if n > MAX_MODULE_LINES and rel not in MODULE_EXCEPTIONS:
            too_big.append(f"{rel}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in FUNCTION_EXCEPTIONS:
                    too_long.append(f"{rel}:{node.name}: {length} lines")
    assert not too_big, f"modules over {MAX_MODULE_LINES} lines: {too_big}"
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_exceptions_are_still_needed():
    """An exception whose module or function is back under the limit must be removed from the list."""
    stale = []
    for rel in MODULE_EXCEPTIONS:
        path = ROOT / rel
        if not path.exists() or path.read_text().count("\n") <= MAX_MODULE_LINES:
            stale.append(rel)
    for key in FUNCTION_EXCEPTIONS:
        rel, _, fn = key.partition(":")
        path = ROOT / rel
        lengths = [n.end_lineno - n.lineno + 1 for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == fn] if path.exists() else []
        if not lengths or max(lengths) <= MAX_FUNCTION_LINES:
            stale.append(key)
    assert not stale, f"no longer over the limit, remove from the exceptions: {stale}"
