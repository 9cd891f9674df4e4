"""The packages import on a laptop without the kiosk's or the server's heavy extras."""

import subprocess
import sys

BLOCKED = ("kivy", "gpiozero", "fastapi", "uvicorn", "openpyxl", "psycopg", "amqtt", "requests")

PROBE = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of it now raises ImportError
import kiosk, kiosk.protocol, kiosk.config, kiosk.outbox, kiosk.uplink, kiosk.flow
import kiosk.catalog, kiosk.survey, kiosk.simulator, kiosk.clock, kiosk.terminal, kiosk.__main__
import server, server.config, server.store, server.ingest, server.link, server.aggregate
import server.alerts, server.compare, server.survey, server.registry, server.retention
import server.backend, server.provision, server.passwd, server.__main__
import server.supervisor, server.periodic, server.watchdog, server.process, server.outbound, server.broker
print("ok")
"""


def test_core_modules_import_without_kivy_gpiozero_or_the_web_stack():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_probe_does_block_what_it_names():
    probe = "import sys\nsys.modules['kivy'] = None\nimport kiosk.ui.shell\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode != 0 and "kivy" in done.stderr


# -- contracts: which module may import what -------------------------------------------
#
# Read from the source with ast, lazy imports inside functions included (they
# run too), ``if TYPE_CHECKING:`` blocks excluded (they never run).

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KIOSK = REPO / "kiosk"
PACKAGES = ("kiosk", "server", "onetap_config")
#: What the pure cores must not reach, directly or through any module they import.
HEAVY = ("paho", "gpiozero", "kivy", "sqlite3", "psycopg", "fastapi")
PURE = ("kiosk.flow", "kiosk.terminal", "kiosk.protocol", "server.aggregate", "server.compare")
#: Third-party packages that may be imported by one place only.
OWNERS = {
    "paho": lambda module: module in ("kiosk.uplink", "server.link"),
    "gpiozero": lambda module: module == "kiosk.buttons",
    "kivy": lambda module: module.startswith("kiosk.ui."),
}
#: Import cycles that exist today and are being taken apart. The test fails
#: on any other cycle, and on an entry here that no longer exists (remove it).
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name a module's source imports (``from a import b`` gives a and a.b)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while pending:
        node = pending.pop()
        if _type_checking_only(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return names


def imported_roots(path: Path) -> set[str]:
    """Top-level packages a module's own source imports (anywhere in it, lazily too)."""
    return {name.split(".")[0] for name in imported_names(path, module_name(path, path.parent))}


def import_graph(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, dict[str, set[str]]]:
    """module -> {"project": modules of *packages* it imports, "external": other top-level packages}."""
    paths = {module_name(path, root): path for package in packages
             for path in sorted((root / package).rglob("*.py"))}
    graph = {}
    for module, path in paths.items():
        project, external = set(), set()
        for name in imported_names(path, module):
            if name.split(".")[0] not in packages:
                external.add(name.split(".")[0])
                continue
            while name and name not in paths:  # `from server import x` where x is no module
                name = name.rpartition(".")[0]
            if name and name != module:
                project.add(name)
        graph[module] = {"project": project, "external": external}
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """The import cycles of *graph*: its strongly connected components of two or more modules."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in sorted(graph[module]["project"]):
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return sorted(found)


def reachable(graph: dict[str, dict[str, set[str]]], start: str) -> set[str]:
    seen, pending = {start}, [start]
    while pending:
        for other in graph[pending.pop()]["project"]:
            if other not in seen:
                seen.add(other)
                pending.append(other)
    return seen


GRAPH = import_graph()


def test_the_graph_reads_the_whole_project():
    assert len(GRAPH) > 50
    assert "kiosk.protocol" in GRAPH["server.ingest"]["project"]
    assert "paho" in GRAPH["kiosk.uplink"]["external"]


def test_no_import_cycles():
    found = {frozenset(cycle): cycle for cycle in cycles(GRAPH)}
    assert [found[c] for c in found.keys() - KNOWN_CYCLES] == []
    assert [sorted(c) for c in KNOWN_CYCLES - found.keys()] == [], "gone: remove from KNOWN_CYCLES"


def test_the_protocol_imports_nothing_of_the_project():
    assert GRAPH["kiosk.protocol"]["project"] == set()


def test_the_server_imports_only_the_protocol_of_the_kiosk():
    trespassers = sorted(f"{module} imports {other}" for module, edges in GRAPH.items()
                         if module.split(".")[0] == "server"
                         for other in edges["project"]
                         if other.split(".")[0] == "kiosk" and other not in ("kiosk", "kiosk.protocol"))
    assert trespassers == []


def test_the_pure_cores_reach_no_broker_hardware_ui_database_or_web_library():
    """Directly or through any project module they import, lazily too."""
    reached = {module: sorted(name for other in reachable(GRAPH, module)
                              for name in GRAPH[other]["external"] if name in HEAVY)
               for module in PURE}
    assert reached == {module: [] for module in PURE}


def test_the_kiosk_core_imports_no_paho_gpiozero_kivy_or_sqlite3():
    """kiosk.flow and kiosk.terminal as Python runs them, with everything they import in turn."""
    probe = ("import sys\nimport kiosk.flow, kiosk.terminal\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_kivy_gpiozero_and_paho_each_live_behind_their_one_module():
    trespassers = sorted(f"{module} imports {name}" for module, edges in GRAPH.items()
                         for name in edges["external"] & OWNERS.keys() if not OWNERS[name](module))
    assert trespassers == []


def test_the_kiosk_reaches_no_pydantic():
    """pydantic took some 11 MB of the kiosk's memory (docs/benchmarks.md): the
    configuration both sides share is on msgspec, and no kiosk module may bring
    pydantic back, directly or through a project module it imports (the server
    keeps it for FastAPI's request models)."""
    reached = sorted(f"{module} reaches {other}" for module in GRAPH if module.split(".")[0] == "kiosk"
                     for other in reachable(GRAPH, module) if "pydantic" in GRAPH[other]["external"])
    assert reached == []
    assert "pydantic" in GRAPH["server.api"]["external"]  # the check does see pydantic where it is


def test_the_kiosk_as_python_runs_it_loads_no_pydantic():
    """Its startup path with a config file read, as Python runs it: a library it
    imports could bring pydantic in where the source check cannot see."""
    example = REPO / "deploy" / "kiosk.example.toml"
    probe = ("import sys\nimport kiosk.__main__, kiosk.config, kiosk.uplink, kiosk.outbox, kiosk.survey\n"
             f"kiosk.config.load_config({str(example)!r}, env={{}})\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_contract_check_sees_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .. import a\n")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fastapi\n"
                                  "def f():\n    from kivy.app import App\n    import paho.mqtt.client\n"
                                  "    from pkg.sub import thing\n")
    (package / "b.py").write_text("import pkg.a\n")
    assert imported_roots(package / "a.py") == {"kivy", "paho", "pkg", "typing"}
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"project": {"pkg.sub"}, "external": {"kivy", "paho", "typing"}}
    assert graph["pkg.sub"]["project"] == {"pkg", "pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub"]]
    assert reachable(graph, "pkg.b") == {"pkg.b", "pkg.a", "pkg.sub", "pkg"}
