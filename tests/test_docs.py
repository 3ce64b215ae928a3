"""The docs name only what exists: files, classes, functions, CLI commands, tests.

README.md and docs/*.md are read as text. Classes and functions are found by parsing
the package's files (AST; nothing Ray-heavy is imported); the CLI's commands come from
its click group (importing it starts no Ray). Nothing a doc names may lie outside the
repository.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raytasks"
DOC_PAGES = ("guide.md", "operations.md", "security.md", "quant.md", "internals.md")

#: CamelCase names the docs may use that are not raytasks classes (Kubernetes kinds,
#: third-party classes, Qlib's and Ray's names). Anything else unknown fails.
THIRD_PARTY = frozenset({
    "Alpha158", "Alpha158DL", "BaseModel", "CronJob", "EmailMessage", "GetClusterId",
    "IdxMax", "RayCluster", "RayJob", "StatefulSet", "VolumeSnapshot",
})
#: plain maths the quant conventions write as calls
MATHS = frozenset({"floor", "max", "mean", "min", "sqrt", "std"})
#: file suffixes that make a backticked name a file name even without a ``/``
FILE_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".ipynb", ".html", ".json", ".js",
                 ".css", ".mako", ".example")

CODE_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PATH_CHARS = re.compile(r"^[\w.\-/*]+$")
CLASS_REF = re.compile(r"^(_?[A-Z]\w*)((?:\.\w+)*)(\(.*\))?$", re.S)
DOTTED_REF = re.compile(r"^(raytasks(?:\.\w+)+)(\(.*\))?$", re.S)
CALL_REF = re.compile(r"^(?:[a-z_]\w*\.)*([a-z_]\w*)\(.*\)$", re.S)
TEST_REF = re.compile(r"^test_\w+$")
CONSTANT_REF = re.compile(r"^_?[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
#: environment variables the docs name (settings' ``RAYTASKS_*`` and Ray's own)
ENV_PREFIXES = ("RAY_", "RAYTASKS_")
CLI_REF = re.compile(r"^raytasks\s+(.+)$", re.S)
WORD = re.compile(r"^[a-z][a-z-]*$")


# ------------------------------------------------------------------ what exists


@cache
def repo_paths() -> frozenset[str]:
    """Every file and directory of the checkout (tracked, or new and not ignored)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        files = [line for line in out.splitlines() if line and (ROOT / line).exists()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk it
        skip = {".git", ".venv", "__pycache__", "node_modules"}
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    paths = set(files)
    for f in files:
        parts = f.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(paths)


@cache
def basenames() -> frozenset[str]:
    return frozenset(p.rsplit("/", 1)[-1] for p in repo_paths())


@dataclass
class Module:
    """What one module of the package defines, read from its source."""

    path: Path
    names: set[str] = field(default_factory=set)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)


def _walk(path: list[str], prefix: str) -> list[tuple[str, Path]]:
    """Module names and files under a package directory (pkgutil; nothing is imported)."""
    found = []
    for info in pkgutil.iter_modules(path):
        directory = Path(path[0])
        name = prefix + info.name
        if info.ispkg:
            found.append((name, directory / info.name / "__init__.py"))
            found += _walk([str(directory / info.name)], name + ".")
        else:
            found.append((name, directory / f"{info.name}.py"))
    return found


@cache
def modules() -> dict[str, Module]:
    found = {"raytasks": Module(PACKAGE / "__init__.py")}
    found.update((name, Module(file)) for name, file in _walk([str(PACKAGE)], "raytasks."))
    for module in found.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                module.classes[node.name] = node
            module.names.update(_bound(node))
    return found


def _bound(node: ast.stmt) -> set[str]:
    """Names a module-level (or class-level) statement binds, ``__all__``'s included."""
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    names = set()
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name):
                names.add(sub.id)
        if isinstance(target, ast.Name) and target.id == "__all__" \
                and isinstance(node.value, ast.List | ast.Tuple):
            names.update(e.value for e in node.value.elts
                         if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return names


@cache
def classes() -> dict[str, list[ast.ClassDef]]:
    found: dict[str, list[ast.ClassDef]] = {}
    for module in modules().values():
        for name, node in module.classes.items():
            found.setdefault(name, []).append(node)
    return found


@cache
def functions() -> frozenset[str]:
    """Every function and method name defined anywhere in the package."""
    names = set()
    for module in modules().values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        names.update(n.name for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    return frozenset(names)


@cache
def constants() -> frozenset[str]:
    """Every module-level name of the package (``KEPT_WRITERS`` and its like)."""
    return frozenset(n for module in modules().values() for n in module.names)


@cache
def defined_tests() -> frozenset[str]:
    names = set()
    for file in (ROOT / "tests").rglob("*.py"):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        names.update(n.name for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                     and n.name.startswith("test_"))
    return frozenset(names)


def class_has(name: str, attr: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a raytasks class ``name`` (or a raytasks base of it) defines ``attr``."""
    for node in classes().get(name, []):
        if any(attr in _bound(stmt) for stmt in node.body):
            return True
        for base in node.bases:
            base_name = base.id if isinstance(base, ast.Name) else \
                base.attr if isinstance(base, ast.Attribute) else None
            if base_name and base_name not in seen and base_name in classes() \
                    and class_has(base_name, attr, seen | {name}):
                return True
    return False


@cache
def cli_commands() -> dict[str, click.Command]:
    """The CLI's commands, with either layout of the CLI.

    ``raytasks.cli`` is a module whose ``main()`` adds ``report`` and ``token`` from
    ``raytasks.cli_admin``, or a package whose ``cli`` group already holds every command.
    """
    group = importlib.import_module("raytasks.cli").cli
    commands = dict(group.commands)
    if importlib.util.find_spec("raytasks.cli_admin") is not None:
        admin = importlib.import_module("raytasks.cli_admin")
        for name in ("report", "token"):
            command = getattr(admin, name, None)
            if isinstance(command, click.Command) and command.name:
                commands.setdefault(command.name, command)
    return commands


# ------------------------------------------------------------------ the checks


def check_path(token: str) -> str | None:
    """Why a path-like name is wrong, or None when it names something in the repository."""
    if ".." in token.split("/"):
        return "points outside the repository"
    path = token.removeprefix("./").rstrip("/")
    if "/" not in path:
        return None if path in basenames() or (ROOT / path).exists() \
            else "no file of that name in the repository"
    if "*" in path:
        return None if any(ROOT.glob(path)) else "matches no file in the repository"
    if path in repo_paths():
        return None
    top = path.split("/")[0]
    if top not in repo_paths() and any(p.endswith("/" + path) for p in repo_paths()):
        return None  # written relative to its folder (`kuberay/raycluster.yaml`)
    return "no such file or directory in the repository"


def check_dotted(ref: str) -> str | None:
    """``raytasks.a.b``: a module, then a name it defines, then (for a class) an attribute."""
    parts = ref.split(".")
    mods = modules()
    i = max(n for n in range(1, len(parts) + 1) if ".".join(parts[:n]) in mods)
    module = mods[".".join(parts[:i])]
    rest = parts[i:]
    if not rest:
        return None
    if rest[0] not in module.names:
        return f"{'.'.join(parts[:i])} defines no {rest[0]!r}"
    if len(rest) > 1 and rest[0] in module.classes and not class_has(rest[0], rest[1]):
        return f"class {rest[0]} has no {rest[1]!r}"
    return None


def check_class(name: str, attrs: str) -> str | None:
    if name in THIRD_PARTY:
        return None
    if name not in classes():
        if name in basenames():  # `Dockerfile`, `Makefile`
            return None
        return "is not a class in raytasks (nor in the test's THIRD_PARTY list)"
    attr = attrs.split(".")[1] if attrs else None
    if attr and not class_has(name, attr):
        return f"class {name} has no {attr!r}"
    return None


def check_command(words: list[str]) -> str | None:
    """``raytasks [--address A | --embedded] COMMAND [SUBCOMMAND] ...``"""
    rest = list(words)
    while rest and rest[0].startswith("--"):
        option = rest.pop(0)
        if option == "--address" and rest:
            rest.pop(0)
    if not rest:
        return None
    name = rest[0]
    commands = cli_commands()
    if name not in commands:
        return f"no CLI command {name!r} (there are: {', '.join(sorted(commands))})"
    command = commands[name]
    if isinstance(command, click.Group) and len(rest) > 1 and WORD.match(rest[1]) \
            and rest[1] not in command.commands:
        return f"no subcommand {rest[1]!r} of {name!r}"
    return None


def check_span(span: str) -> str | None:
    """Why a backticked name is wrong, or None (also for what is not a name at all)."""
    token = " ".join(span.split())
    if m := CLI_REF.match(token):
        return check_command(m.group(1).split())
    if PATH_CHARS.match(token) and not token.startswith("/") \
            and ("/" in token or token.endswith(FILE_SUFFIXES)):
        return check_path(token)
    if m := DOTTED_REF.match(token):
        return check_dotted(m.group(1))
    if (m := CLASS_REF.match(token)) and re.search("[a-z]", m.group(1)):
        return check_class(m.group(1), m.group(2))
    if CONSTANT_REF.match(token) and not token.startswith(ENV_PREFIXES):
        return None if token in constants() else "no module-level name of raytasks"
    if TEST_REF.match(token):
        return None if token in defined_tests() else "no test of that name in tests/"
    if m := CALL_REF.match(token):
        name = m.group(1)
        return None if name in functions() or name in MATHS else \
            f"no function or method {name!r} in raytasks"
    if "../" in token:
        return "points outside the repository"
    return None


@cache
def headings(doc: Path) -> frozenset[str]:
    """GitHub's anchors for a page's headings."""
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    found = set()
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().replace("`", "").lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return frozenset(found)


def check_link(doc: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
        return None
    path_part, _, anchor = target.partition("#")
    if path_part.startswith("/"):
        return "is an absolute path: link inside the repository, relatively"
    resolved = (doc.parent / path_part).resolve() if path_part else doc
    if not resolved.is_relative_to(ROOT):
        return "points outside the repository"
    if not resolved.exists():
        return "no such file in the repository"
    if anchor and resolved.suffix == ".md" and anchor not in headings(resolved):
        return f"{resolved.name} has no heading for #{anchor}"
    return None


def problems(doc: Path, text: str) -> list[str]:
    """Every wrong reference in a page's text, as ``page: `name`: why``."""
    found = []
    where = doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc
    prose = FENCE.sub("", text)
    for span in CODE_SPAN.findall(prose):
        why = check_span(span)
        if why:
            found.append(f"{where}: `{' '.join(span.split())}` {why}")
    for block in FENCE.findall(text):  # command lines in shell blocks
        for line in block.splitlines()[1:-1]:
            line = line.strip().removeprefix("$ ")
            if line.startswith("raytasks "):
                why = check_command(line.split("#")[0].split()[1:])
                if why:
                    found.append(f"{where}: `{line}` {why}")
    for target in LINK.findall(prose):
        why = check_link(doc, target)
        if why:
            found.append(f"{where}: link ({target}) {why}")
    unlinked = LINK.sub("", text)  # then a path up and out in prose or in a code block
    rest = CODE_SPAN.sub("", FENCE.sub("", unlinked)) + "\n".join(FENCE.findall(unlinked))
    for line in rest.splitlines():
        if "../" in line:
            found.append(f"{where}: '{line.strip()}' points outside the repository")
    return found


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_class_function_and_command_a_page_names_exists(doc: Path) -> None:
    # Given a page of the docs
    text = doc.read_text(encoding="utf-8")
    # When every backticked name, shell command line and relative link on it is checked
    found = problems(doc, text)
    # Then each names a file, class, function, test or command that exists in the repository
    assert not found, "\n".join(found)


def test_the_checks_catch_a_stale_name_of_each_kind() -> None:
    # Given a page naming a missing file, a missing class, a missing command, a missing
    # function, a missing test, a missing constant and three ways outside the repository
    page = ROOT / "docs" / "bogus.md"
    text = ("`raytasks/bench.py` `Waiters` `raytasks frobnicate ID` `raytasks bench nope` "
            "`pool_sizes()` `test_nothing_of_the_sort` `../shared/DESIGN.md` "
            "[design](../../shared/DESIGN.md) [a page](guide.md#no-such-heading) "
            "`SqlTaskStore.no_such_method` `raytasks.report.no_such_function` `NO_SUCH_S`\n"
            "see ../shared/DESIGN.md\n```sh\nraytasks frobnicate\n```\n")
    # When it is checked
    found = problems(page, text)
    # Then each is named, and nothing else
    assert len(found) == 14, "\n".join(found)
    # while names that do exist pass, in either form (the public API's, and a constant of
    # whatever the package defines today)
    constant = min(c for c in constants() if CONSTANT_REF.match(c))
    fine = ("`raytasks/runtime/` `deploy/README.md` `kuberay/raycluster.yaml` `pyproject.toml` "
            "`TaskManager` `TaskManager.wait_sync` `TaskCreateRequest.depends_on` "
            "`TaskPriority.HIGH` `raytasks submit prediction -p days=5` "
            "`raytasks --address ray://head:10001 up --no-head` `raytasks token create` "
            "`raytasks.connect(address)` `ctx.check_cancelled()` `RayCluster` `GET /tasks/{id}` "
            "`<data_dir>/api_tokens.json` [home](../README.md) `RAYTASKS_ADDRESS` "
            f"`{constant}` `test_the_readme_is_the_front_door`")
    assert problems(page, fine) == []


def test_the_readme_is_the_front_door() -> None:
    # Given the README and the pages of docs/
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    # Then it shows the two commands, links every page, and the pages are the planned ones
    assert "make demo" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(readme)
              if t.startswith("docs/")}
    assert set(pages) <= linked, f"pages the README does not link: {set(pages) - linked}"
    assert set(DOC_PAGES) <= set(pages)
    assert len(readme.splitlines()) <= 220, "the README is the front door, not the house"
