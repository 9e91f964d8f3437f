"""The house rules of normlab's source tree, checked on the code itself (no training)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "normlab"
MAX_LINES = 450
# Every file the run-folder module owns; nobody else may spell these names.
OWNED_NAMES = ("config.json", "summary.json", "sweep.json", "sweep.csv", "metrics.csv",
               "timing.csv", "timing.json", "env.json", ".normlab.lock", "misclassified_",
               "report.md", "weights.csv", "test_accuracy.png", "test_loss.png",
               "train_vs_test.png", "predictions/", "checkpoints/", "points/", "figures/")
OWNER = SRC / "runfolder"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(imported module, names imported from it) for every import in the file, nested ones
    included (a lazy import still ties two modules together)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.append((base, [a.name for a in node.names]))
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, names in _imports(path, name):
            if target in mods and target != name:
                graph[name].add(target)
            for n in names:   # "from normlab import data" imports the module normlab.data
                if f"{target}.{n}" in mods:
                    graph[name].add(f"{target}.{n}")
    return graph


def test_no_import_cycles() -> None:
    """No module of normlab imports, directly or through others, a module that imports it
    back (lazy imports inside functions count); a package may import its own submodules."""
    graph = _graph()
    for pkg in graph:   # a package's __init__ re-exporting its submodules is not a cycle
        graph[pkg] = {m for m in graph[pkg] if not m.startswith(pkg + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("folder", ["src", "benchmarks", "scripts", "tests"])
def test_no_private_names_across_modules(folder: str) -> None:
    """No module, benchmark, script or test imports another module's private (_name) name."""
    mods = _modules()
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        name = next((n for n, p in mods.items() if p == path), path.stem)
        for target, names in _imports(path, name):
            if not target.startswith("normlab") or target == name:
                continue
            if name.startswith(target + ".") or target.startswith(name + "."):
                continue   # a package and its own submodules
            bad += [f"{path.relative_to(ROOT)}: {target}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def _private(name: object) -> bool:
    return isinstance(name, str) and name.startswith("_") and not name.startswith("__")


_ATTR_CALLS = ("setattr", "getattr", "delattr", "hasattr")
_DOTTED_PRIVATE = re.compile(r"^(normlab(?:\.[A-Za-z]\w*)*)\.(_[A-Za-z]\w*)$")


@pytest.mark.parametrize("folder", ["src", "benchmarks", "scripts", "tests"])
def test_no_private_names_reached_through_a_module(folder: str) -> None:
    """Nor reaches one through another normlab module: no ``data._name`` or
    ``normlab.data._name`` read, no ``setattr(data, "_name", ...)`` (getattr, delattr, hasattr,
    a test's ``monkeypatch.setattr`` included) and no patch target ``"normlab.data._name"``
    where ``data`` is another module of normlab; a seam that tests replace is public."""
    mods = _modules()
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        name = next((n for n, p in mods.items() if p == path), path.stem)

        def other(module: str | None) -> bool:
            return module in mods and module != name and not name.startswith(module + ".") \
                and not module.startswith(name + ".")

        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = {}   # local name -> the normlab module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bound.update({a.asname: a.name for a in node.names if a.asname})
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                bound.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})

        def module_of(expr: ast.expr) -> str | None:
            """The normlab module ``expr`` names: a bound name, or a dotted ``normlab.x.y``."""
            if isinstance(expr, ast.Name):
                return bound.get(expr.id)
            return ast.unparse(expr) if isinstance(expr, ast.Attribute) else None

        where = f"{path.relative_to(ROOT)}:"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) \
                    and other(module_of(node.value)):
                bad.append(f"{where}{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.Call) and len(node.args) >= 2 \
                    and (getattr(node.func, "id", None) in _ATTR_CALLS
                         or getattr(node.func, "attr", None) in _ATTR_CALLS) \
                    and isinstance(node.args[1], ast.Constant) and _private(node.args[1].value) \
                    and other(module_of(node.args[0])):
                bad.append(f"{where}{node.lineno}: {ast.unparse(node.func)}"
                           f"({ast.unparse(node.args[0])}, {node.args[1].value!r})")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                m = _DOTTED_PRIVATE.match(node.value)
                if m and other(m.group(1)):
                    bad.append(f"{where}{node.lineno}: {node.value!r}")
    assert not bad, "private names reached through another module:\n" + "\n".join(bad)


def test_modules_are_short_and_say_what_they_own() -> None:
    """Every module is under the line budget and opens with a docstring."""
    for name, path in _modules().items():
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines <= MAX_LINES, f"{name} has {lines} lines (> {MAX_LINES}); split it"
        if path.name not in ("__main__.py",):
            assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), \
                f"{name} has no module docstring saying what it owns"


def _path_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal in ``source`` that is not a docstring: the pieces
    code builds paths from (f-string parts included)."""
    tree = ast.parse(source)
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef,
                                    ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


@pytest.mark.parametrize("folder", ["src", "benchmarks", "scripts", "notebooks", "tests"])
def test_only_the_runfolder_spells_its_file_names(folder: str) -> None:
    """The run folder's and sweep folder's file names are used to build paths in
    normlab.runfolder alone: no other module, script, notebook or test spells one as a path
    (prose in help texts may name them; this file lists them to check for them)."""
    hits = []
    for path in sorted((ROOT / folder).rglob("*")):
        if path.suffix not in (".py", ".ipynb") or OWNER in path.parents \
                or path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":   # code cells only: outputs may show file names
            import json
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"]
                             if c["cell_type"] == "code")
        for line_no, literal in _path_literals(text):
            if any(c.isspace() for c in literal):
                continue   # prose (a help text, a message), not a path
            for owned in OWNED_NAMES:
                if re.match(rf"(.*/)?{re.escape(owned)}", literal):
                    hits.append(f"{path.relative_to(ROOT)}:{line_no}: {literal!r}")
    assert not hits, "file names owned by normlab.runfolder spelled elsewhere:\n" + "\n".join(hits)


def test_pyproject_torch_matches_the_makefile_pin() -> None:
    """pyproject.toml asks for exactly the torch release the Makefile installs and tests."""
    pin = re.search(r"^TORCH_PIN \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    deps = re.findall(r'"(torch[^"]*)"', (ROOT / "pyproject.toml").read_text())
    assert deps == [pin], f"pyproject torch requirement {deps} != Makefile pin {pin}"


@pytest.mark.parametrize("module", ["normlab.config", "normlab.norms", "normlab.runfolder",
                                    "normlab.compare",
                                    "normlab.table", "normlab.findings", "normlab.stats",
                                    "normlab.datasets"])
def test_light_modules_do_not_import_torch(module: str) -> None:
    """The config, the registry and the readers of results load without torch."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
