"""The shape of the code: `sae_core` is a library without the app, no module imports itself
through others, files are written atomically and nothing is unpickled (the house style in
DESIGN.md). Size is no rule here: one concept stays in one file (docs/architecture.md)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI_LIBRARIES = ("gradio", "plotly", "pandas")


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of the code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", _python_files("sae_core"), ids=lambda p: p.name)
def test_the_library_imports_no_ui_code(path):
    assert not _imported(path) & {*UI_LIBRARIES, "ui", "app"}


def test_the_library_imports_with_the_ui_libraries_missing():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in _python_files("sae_core")]
    code = (f"import sys\nfor name in {UI_LIBRARIES!r}:\n    sys.modules[name] = None\n"
            f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in "
            f"{UI_LIBRARIES!r} and sys.modules[n] is not None))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """module -> the modules of `paths` it imports, at any depth of its code (a function-level
    import ties two files as much as a top-level one)."""
    modules = {_module_of(p): p for p in paths}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets |= {base, *(f"{base}.{a.name}" for a in node.names)}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_module_imports_itself_through_others():
    """No circles: every file can be read after the files it imports (the house's floors);
    `farm-studio look` draws the same graph."""
    graph = _import_graph([*_python_files("sae_core", "ui"), ROOT / "app.py"])
    done, on_path, circles = set(), [], []

    def visit(name):
        if name in on_path:
            circles.append([*on_path[on_path.index(name):], name])
            return
        if name in done:
            return
        on_path.append(name)
        for other in sorted(graph[name]):
            visit(other)
        on_path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert circles == []


RAW_WRITE = re.compile(r"\.write_text\(|\.write_bytes\(|save_file\(|json\.dump\(|"
                       r"open\([^)]*['\"][wa]b?['\"]")


@pytest.mark.parametrize("path", _python_files("sae_core", "ui"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_is_written_through_the_atomic_helper(path):
    """Files are written by sae_core/atomic.py (temporary file, fsync, rename), nowhere else
    (a writer inside `write_atomic(...)` writes its temporary file)."""
    if path.name == "atomic.py":
        return
    raw = [line.strip() for line in path.read_text().splitlines()
           if RAW_WRITE.search(line) and "write_atomic(" not in line]
    assert raw == [], f"{path.name} writes without sae_core.atomic: {raw}"


UNSAFE_LOAD = re.compile(r"torch\.load\(|\bpickle\b|\bjoblib\b|allow_pickle\s*=\s*True|"
                         r"trust_remote_code\s*=\s*True")


@pytest.mark.parametrize("path", [*_python_files("sae_core", "ui"), ROOT / "app.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_safetensors_and_json_are_loaded(path):
    """No unpickling (torch.load, pickle, numpy's allow_pickle) and no model code from a
    repo: a file or repo id from a stranger can hold code."""
    text = path.read_text()
    if path == ROOT / "sae_core" / "hub" / "torch_weights.py":
        # The one reader of torch pickles (suites that ship nothing else): weights only.
        calls = re.findall(r"torch\.load\([^)]*\)", text)
        assert calls and all("weights_only=True" in c for c in calls), calls
        text = re.sub(r"torch\.load\([^)]*\)", "", text)
    assert not UNSAFE_LOAD.findall(text), path.name
