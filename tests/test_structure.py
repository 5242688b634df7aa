"""The layout DESIGN.md asks for: no import cycles, a napari-free and CLI-free core whose
messages name no command-line flag, one parser that knows every subcommand."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "napari_histovol"


def test_no_import_cycles():
    p = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "import_graph.py"), str(PKG)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0 and p.stdout.splitlines()[-1] == "0 cycles", p.stdout + p.stderr


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            dots = "." * node.level
            names.add(dots + (node.module or ""))
    return names


def test_core_imports_no_gui_and_no_cli():
    banned = re.compile(r"^(napari|qtpy|magicgui|PyQt[56]|PySide[26]|vispy|superqt)(\.|$)")
    for path in (PKG / "core").rglob("*.py"):
        for name in _imports(path):
            assert not banned.match(name), f"{path.relative_to(PKG)} imports {name}"
            stripped = name.lstrip(".")
            assert not stripped.startswith(("cli", "_widgets", "_layers")), (
                f"{path.relative_to(PKG)} imports {name}"
            )
            assert "napari_histovol.cli" not in name and "napari_histovol._widgets" not in name


def test_core_messages_name_no_command_line_flags():
    """A napari user has no --overwrite: core errors name the parameter (option=...) instead."""
    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    for path in (PKG / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for c in ast.walk(node.exc):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str):
                        assert not flag.search(c.value), (
                            f"{path.relative_to(PKG)}:{node.lineno} names a flag: {c.value!r}"
                        )


def test_widgets_do_not_import_the_cli():
    for path in (PKG / "_widgets").rglob("*.py"):
        for name in _imports(path):
            assert not name.lstrip(".").startswith("cli"), f"{path.name} imports {name}"


def test_every_subcommand_module_registers_and_runs():
    from napari_histovol.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    names = {m.NAME for m in SUBCOMMANDS}
    assert names == {
        "info",
        "convert",
        "align",
        "warp-points",
        "interpolate",
        "isotropic",
        "build",
        "focus",
        "focus-train",
        "compress",
        "decompress",
        "demo",
        "stitch",
        "segment",
        "qc",
        "restore",
    }
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == names
