"""The shape of the code: no two modules of the package import each other (lazy imports inside
functions included: they only hide a circle), and no test module imports another (shared
builders live in tests/helpers/)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_names(folder: Path) -> dict[str, Path]:
    names = {}
    for path in folder.rglob("*.py"):
        names[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    return names


def imported(path: Path, known: dict[str, Path], prefix: str) -> set[str]:
    """The modules of `known` that `path` imports anywhere in it, but under `if TYPE_CHECKING:`
    (annotations only, never run)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            # `from package import module` imports the module; `from module import name`, the module
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names}
    return {name for name in found if name in known}


def import_circles(folder: Path, prefix: str) -> list[list[str]]:
    known = module_names(folder)
    graph = {name: imported(path, known, prefix) - {name} for name, path in known.items()}
    circles, on_path, done = [], [], set()

    def visit(name: str) -> None:
        on_path.append(name)
        for target in sorted(graph[name]):
            if target in on_path:
                circles.append([*on_path[on_path.index(target):], target])
            elif target not in done:
                visit(target)
        on_path.pop()
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name)
    return circles


def test_no_module_of_the_package_imports_itself_through_others():
    assert import_circles(ROOT / "l2rw", "l2rw") == []


def test_the_circle_finder_finds_a_circle(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.b import g\n")  # lazy, still a circle
    (package / "b.py").write_text("from pkg import a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert import_circles(package, "pkg") == [["pkg.a", "pkg.b", "pkg.a"]]


def test_no_test_module_imports_another():
    tests = ROOT / "tests"
    offenders = {
        path.name: sorted(name for name in imported(path, module_names(tests), "tests") if not name.startswith("tests.helpers"))
        for path in tests.glob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
