"""The shape of the code: imports flow one way (recipe -> data/model -> train -> evaluate/profile ->
store -> dashboard) with no cycle, errors a user can cause share one base class, and list flags
read the same way in every command."""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import engine
from engine.cli import build_parser
from engine.errors import UserError

ENGINE = Path(engine.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(module: str) -> bool:
    base = ENGINE.parent.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """engine module -> the engine modules it imports anywhere in its source (function-level imports too)."""
    graph = {}
    for path in ENGINE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("engine")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from .x import y
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                if not target.startswith("engine"):
                    continue
                edges.add(target)
                edges |= {f"{target}.{a.name}" for a in node.names if _exists(f"{target}.{a.name}")}
        graph[name] = {e for e in edges if _exists(e) and e != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle_in_the_engine():
    assert _cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_imports_flow_one_way():
    graph = import_graph()
    assert graph["engine.errors"] == set()  # a leaf: every module may import it
    fast_path = {"engine.inference", "engine.segment", "engine.bench", "engine.onnx_backend"}
    for upstream in ("engine.train", "engine.evaluate", "engine.profiling", "engine.throughput", "engine.runtime",
                     "engine.metrics", "engine.store", "engine.config"):
        assert not graph[upstream] & fast_path, upstream  # training and evaluation never run the fast path
    assert not {e for e in graph["engine.store"] if e.startswith(("engine.models", "engine.train", "engine.data"))}
    for name, edges in graph.items():
        assert "engine.cli" not in edges or name == "engine.__main__", name  # the entry point imports, never imported
        assert "engine.demo" not in edges or name == "engine.cli", name
        if name.startswith(("engine.data", "engine.models")):
            assert not edges & {"engine.store", "engine.train", "engine.evaluate", *fast_path}, name
    for path in ENGINE.rglob("*.py"):  # the engine never imports the dashboard: the entry point alone prints
        imported = {a for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in ([x.name for x in n.names] if isinstance(n, ast.Import) else [n.module or ""])}
        allowed = {"dashboard.report"} if path == ENGINE / "cli.py" else set()  # the report, with the dashboard's figures
        assert not {a for a in imported if a.split(".")[0] == "dashboard"} - allowed, path


def test_every_error_the_engine_defines_is_a_user_error():
    """The CLI catches UserError alone: an error class outside it would reach users as a traceback."""
    found = []
    for info in pkgutil.walk_packages([str(ENGINE)], "engine."):
        if info.name == "engine.__main__":  # importing it runs the CLI
            continue
        module = importlib.import_module(info.name)
        found += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                  if issubclass(cls, Exception) and cls.__module__ == info.name]
    assert len(found) >= 12
    assert [cls.__qualname__ for cls in found if not issubclass(cls, UserError)] == []


@pytest.mark.parametrize("argv,dest,expected", [
    (["bench", "--variants", "a,b", "c"], "variants", ["a", "b", "c"]),
    (["bench", "--variants", "a", "--variants", "b"], "variants", ["a", "b"]),
    (["bench", "--sizes", "64x32", "80x40,96x48"], "sizes", [(64, 32), (80, 40), (96, 48)]),
    (["bench", "--sizes", "64x32,"], "sizes", [(64, 32)]),
    (["demo", "--variants", "unet_ce_dice,deeplabv3_r50_adam"], "variants", ["unet_ce_dice", "deeplabv3_r50_adam"]),
    (["segment", "--variant", "v", "--output", "o", "--input", "x.png,y.png", "--classes", "road,sky", "vehicle",
      "--scales", "0.75,1", "1.25"], "classes", ["road", "sky", "vehicle"]),
    (["segment", "--variant", "v", "--output", "o", "--input", "x.png", "--scales", "0.75,1", "1.25"], "scales",
     [0.75, 1.0, 1.25]),
    (["segment", "--variant", "v", "--output", "o", "--input", "x.png,y.png", "z.png"], "input",
     ["x.png", "y.png", "z.png"]),
    (["check-data", "--splits", "train,val"], "splits", ["train", "val"]),
])
def test_every_list_flag_takes_spaces_commas_or_both(argv, dest, expected):
    assert getattr(build_parser().parse_args(argv), dest) == expected


def test_list_flags_keep_a_path_with_a_comma_whole_and_replace_defaults(tmp_path, capsys):
    odd = tmp_path / "a,b.png"
    odd.write_bytes(b"")
    a = build_parser().parse_args(["coverage", "--variant", "v", "--csv", "c", "--input", str(odd)])
    assert a.input == [str(odd)]
    assert build_parser().parse_args(["bench"]).sizes == [(512, 256), (1024, 512), (2048, 1024)]
    assert build_parser().parse_args(["bench", "--sizes", "64x32"]).sizes == [(64, 32)]  # not appended to the default
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["bench", "--sizes", "64x32,huge"])
    assert e.value.code == 2 and "'huge'" in capsys.readouterr().err
