"""Specs cannot drift: every code identifier, module path and file path quoted in backticks in specs/*.md exists.

What is checked (each backticked span, with fenced ``` blocks ignored as pseudo-code):
- a file path (contains "/" or ends in a file extension) must exist: relative to the repository root (to the spec's
  folder if it starts with "./" or "../"); a bare file name (`layout.py`) anywhere in the repository;
- a dotted path rooted at `zkref` or `backends` must import (the longest importable module, then attributes);
  one rooted at another installed package (`ezkl.poseidon_hash`, `np.arange`) must import likewise;
- a bare name must be defined in zkref/ or backends/: a class, function or method, a module- or class-level
  assignment (constants, dataclass fields, enum members), an attribute set on `self`, an imported name or a
  parameter name — or be a Python builtin or keyword;
- `Class.member` needs `member` on that class (or a base class); `name.member` with `name` not a class (a parameter
  such as `layouter`) needs `name` defined and `member` to be a member of some class;
- a call (`MockProver(circuit, instances, k=None)`, `round_half_away(v) = …`) is checked by its callee alone.
A name or path that fails those may still be a *runtime name* — a column, gate or file name, a JSON key, a format
tag (`mac.acc`, `q_init`, `zkref-digest.json`, `zkref-lora-statement/1`): it resolves if it equals a string literal
of the code (docstrings excluded), f-string fields matching anything and a leading "{field}." or "{field} " optional.
Names rooted at `zkref`/`backends` never resolve this way.

Skipped, as not code: spans with whitespace or operators that are not calls (formulas such as `2^k`, `x_q[t, j]`,
gate names, JSON), spans not starting with a letter, "_" or "." (numbers, hex, `[]`, `/1`), command lines (starting
with "zkref ", "make " or "--") and glob patterns (containing "*").
"""
from __future__ import annotations

import ast
import builtins
import functools
import importlib
import importlib.util
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.md"))
PACKAGES = ("zkref", "backends")
ALIASES = {"np": "numpy"}                      # the project's import conventions
SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".hypothesis", ".pytest_cache"}

DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
CALL = re.compile(rf"({DOTTED})\(.*\).*", re.S)
PATH = re.compile(r"[\w.\-/{}]+")
FILE_EXTENSION = re.compile(r"\.(py|md|json|toml|txt|bin|pt|safetensors|onnx|yaml|yml|cfg|csv)$")
COMMAND_PREFIXES = ("zkref ", "make ", "--")


# ------------------------------------------------------------------------------------------------ the code index
@dataclass
class CodeIndex:
    """Every name defined in zkref/ and backends/, the members of every class, and the runtime string literals."""

    names: set[str] = field(default_factory=set)
    members: dict[str, set[str]] = field(default_factory=dict)
    bases: dict[str, set[str]] = field(default_factory=dict)
    strings: set[str] = field(default_factory=set)
    patterns: list[re.Pattern] = field(default_factory=list)

    def class_members(self, cls: str, seen: frozenset = frozenset()) -> set[str]:
        """Members of `cls` and of its (by-name) base classes."""
        out = set(self.members.get(cls, ()))
        for base in self.bases.get(cls, set()) - seen:
            out |= self.class_members(base, seen | {cls})
        return out

    def is_literal(self, text: str, fstrings: bool = True) -> bool:
        """Is `text` a string literal of the code (or, with `fstrings`, does an f-string produce it)?"""
        return text in self.strings or (fstrings and any(p.fullmatch(text) for p in self.patterns))


def _targets(node: ast.AST) -> list[str]:
    """Names bound by an assignment target (tuples unpacked)."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [n for elt in node.elts for n in _targets(elt)]
    return []


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module and its classes and functions (not runtime names)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def _fstring_patterns(node: ast.JoinedStr) -> list[str]:
    """Regexes an f-string can produce: fields as wildcards (no whitespace), also without a leading "{field}." or
    "{field} ". A pattern with a wildcard needs 3 literal letters (f"{a}.{b}" or f"p{i}" would match too much)."""
    values = node.values
    variants = [values]
    if len(values) > 1 and not isinstance(values[0], ast.Constant) and isinstance(values[1], ast.Constant) \
            and values[1].value[:1] in (".", " "):
        variants.append([ast.Constant(values[1].value[1:])] + values[2:])
    out = []
    for parts in variants:
        literal = "".join(v.value for v in parts if isinstance(v, ast.Constant))
        wild = any(not isinstance(v, ast.Constant) for v in parts)
        if literal.strip() and (not wild or len(re.findall(r"[A-Za-z]", literal)) >= 3):
            out.append("".join(re.escape(v.value) if isinstance(v, ast.Constant) else r"\S+?" for v in parts))
    return out


@functools.cache
def code_index() -> CodeIndex:
    """Parse every module of the packages once."""
    index = CodeIndex()
    patterns: set[str] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            docstrings = _docstrings(tree)
            in_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    index.names.add(node.name)
                if isinstance(node, ast.ClassDef):
                    members = index.members.setdefault(node.name, set())
                    index.bases.setdefault(node.name, set()).update(
                        b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                        if isinstance(b, (ast.Name, ast.Attribute)))
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                            members.add(item.name)
                        elif isinstance(item, ast.Assign):
                            members.update(n for t in item.targets for n in _targets(t))
                        elif isinstance(item, ast.AnnAssign):
                            members.update(_targets(item.target))
                    for sub in ast.walk(node):  # attributes set on self in its methods
                        if isinstance(sub, (ast.Assign, ast.AnnAssign)):
                            for t in (sub.targets if isinstance(sub, ast.Assign) else [sub.target]):
                                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) \
                                        and t.value.id == "self":
                                    members.add(t.attr)
                    index.names |= members
                elif isinstance(node, ast.arguments):
                    index.names.update(a.arg for a in node.posonlyargs + node.args + node.kwonlyargs)
                    index.names.update(a.arg for a in (node.vararg, node.kwarg) if a is not None)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    index.names.update((a.asname or a.name).split(".")[0] for a in node.names)
                elif isinstance(node, ast.JoinedStr):
                    patterns.update(_fstring_patterns(node))
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and id(node) not in docstrings and id(node) not in in_fstring:
                    index.strings.add(node.value)
            for node in tree.body:  # module-level assignments
                if isinstance(node, ast.Assign):
                    index.names.update(n for t in node.targets for n in _targets(t))
                elif isinstance(node, ast.AnnAssign):
                    index.names.update(_targets(node.target))
    index.patterns = [re.compile(p, re.S) for p in sorted(patterns)]
    return index


@functools.cache
def repo_file_names() -> set[str]:
    """Names of every file in the repository (for bare file names such as `layout.py`)."""
    out = set()
    for path in ROOT.rglob("*"):
        if path.is_file() and not SKIPPED_DIRS & set(path.relative_to(ROOT).parts):
            out.add(path.name)
    return out


# ------------------------------------------------------------------------------------------------ resolution
def _import_path(parts: list[str]) -> bool:
    """Import the longest module prefix of `parts`, then follow the rest as attributes."""
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            if importlib.util.find_spec(name) is None:
                continue
            obj = importlib.import_module(name)
        except (ImportError, ValueError):
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def _is_module_root(name: str) -> bool:
    try:
        return importlib.util.find_spec(ALIASES.get(name, name)) is not None
    except (ImportError, ValueError):
        return False


def resolve_name(dotted: str) -> bool:
    """Does a (dotted) Python name exist, by the rules in the module docstring?"""
    parts = dotted.split(".")
    index = code_index()
    if parts[0] in PACKAGES:
        return _import_path(parts)
    if len(parts) > 1 and _is_module_root(parts[0]):
        return _import_path([ALIASES.get(parts[0], parts[0])] + parts[1:])
    if len(parts) == 1:
        name = parts[0]
        return (name in index.names or hasattr(builtins, name) or keyword.iskeyword(name)
                or index.is_literal(name))
    head, member = parts[0], parts[1]
    if head in index.members:
        return member in index.class_members(head)
    all_members = set().union(*index.members.values())
    return (head in index.names and all(p in all_members for p in parts[1:])) or index.is_literal(dotted)


def resolve_path(text: str, spec: Path) -> bool:
    """Does a file path exist (or is it a runtime file name / format tag)?"""
    if text.startswith(("./", "../")):
        found = (spec.parent / text).exists()
    elif "/" in text:
        found = (ROOT / text.rstrip("/")).exists()
    else:
        found = text in repo_file_names()
    return found or code_index().is_literal(text, fstrings=False)


def classify(span: str) -> tuple[str, str] | None:
    """("name", dotted name) or ("path", path) for a span that looks like code; None for one that does not."""
    text = " ".join(span.split())
    if not re.match(r"[A-Za-z_.]", text) or text.startswith(COMMAND_PREFIXES) or "*" in text:
        return None
    call = CALL.fullmatch(text)
    if call:
        return "name", call.group(1)
    if PATH.fullmatch(text) and ("/" in text or FILE_EXTENSION.search(text)):
        return "path", text
    if re.fullmatch(DOTTED, text):
        return "name", text
    return None


def backticked(spec: Path) -> list[tuple[int, str]]:
    """(line, text) of every inline code span of a markdown file, fenced code blocks excluded."""
    lines = spec.read_text(encoding="utf-8").split("\n")
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            lines[i] = ""
        elif fenced:
            lines[i] = ""
    text = "\n".join(lines)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in re.finditer(r"`([^`]+)`", text)]


def unresolved(spec: Path) -> list[str]:
    """'spec:line: `text`' for every code-looking span of `spec` that does not resolve."""
    out = []
    for line, span in backticked(spec):
        kind = classify(span)
        if kind is None:
            continue
        ok = resolve_name(kind[1]) if kind[0] == "name" else resolve_path(kind[1], spec)
        if not ok:
            out.append(f"{spec.relative_to(ROOT)}:{line}: `{' '.join(span.split())}`")
    return out


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_identifier_quoted_in_the_spec_exists(spec):
    missing = unresolved(spec)
    assert not missing, f"{len(missing)} identifier(s) quoted in {spec.name} do not exist:\n" + "\n".join(missing)


def test_the_rules_accept_real_code_and_reject_drift():
    spec = ROOT / "specs" / "constraint-system.md"
    for good in ("zkref.plonkish.mock_prover.MockProver", "ConstraintSystem.minimal_k", "minimal_k", "Requant",
                 "layouter.assign_region", "np.int64", "ValueError", "None"):
        assert resolve_name(good), good
    for bad in ("zkref.mock_prover", "zkref.plonkish.mock_prover.NoSuchProver", "ConstraintSystem.no_such_method",
                "no_such_function_anywhere", "layouter.no_such_method", "zkref.accounting"):
        assert not resolve_name(bad), bad
    assert resolve_path("zkref/plonkish/layout.py", spec) and resolve_path("layout.py", spec)
    assert not resolve_path("zkref/mock_prover.py", spec) and not resolve_path("no_such_file.py", spec)
    assert classify("MockProver(circuit, instances, k=None)") == ("name", "MockProver")
    assert classify("round_half_away(v) = sign(v)·floor(|v| + 0.5)") == ("name", "round_half_away")
    for not_code in ("2^k", "x_q[t, j]", "zkref audit --circuit lora", "0x09c4", "[]", "y = B_q·z_q", "*.safetensors",
                     '{"digest": "…"}', "s0[next] = …", "poseidon init"):
        assert classify(not_code) is None, not_code
