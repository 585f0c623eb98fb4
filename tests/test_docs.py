"""README.md and docs/: README stays short, every relative link and #anchor resolves, and the house map names
files that exist and every package under src/arena, whose modules import one way (no cycle)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
GENERATED = {"benchmarks.md"}  # written by `make bench`, not by hand
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (their `#` lines are shell comments, their brackets code)."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (`_` and `-` kept), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for m in re.finditer(r"^#{1,6} +(.+?) *#*$", _prose(path.read_text()), re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _relative_links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", _prose(path.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def _house_map() -> list[str]:
    """The paths the README's house map names: its code block, two spaces of indent per folder level."""
    section = README.read_text().split("\n## House map", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```\n(.*?)^```", section, re.M | re.S)
    assert block, "README's House map section has no code block"
    paths: list[str] = []
    parents: list[str] = []
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0 and indent // 2 <= len(parents), f"house map: odd indent: {line!r}"
        parents = parents[: indent // 2]
        name = line.split()[0]
        path = "".join(parents) + name
        paths.append(path)
        if name.endswith("/"):
            parents.append(name)
    return paths


def test_readme_is_at_most_200_lines():
    n = len(README.read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines; move sections into docs/ (DESIGN.md: at most 200)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in _relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme_and_links_back():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _relative_links(README)}
    for page in sorted(DOCS.glob("*.md")):
        assert page.resolve() in linked, f"docs/{page.name} is not linked from README.md"
        if page.name in GENERATED:
            continue
        head = page.read_text().split("\n\n", 2)
        assert head[0].startswith("# "), f"docs/{page.name} does not start with a title"
        assert "../README.md" in head[1], f"docs/{page.name}: its summary does not link back to README.md"


def test_house_map_names_only_files_that_exist():
    paths = _house_map()
    assert any(p.startswith("src/arena/") and p.endswith(".py") for p in paths)
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"README's house map names what does not exist: {missing}"


def test_house_map_shows_every_package_under_src_arena():
    mapped = set(_house_map())
    packages = sorted(
        str(d.relative_to(REPO)) + "/" for d in (REPO / "src" / "arena").rglob("*")
        if d.is_dir() and (d / "__init__.py").is_file()
    )
    assert packages, "no package found under src/arena"
    missing = [p for p in packages if p not in mapped]
    assert not missing, f"README's house map leaves out packages: {missing}"


def _module_imports() -> dict[str, set[str]]:
    """Each arena module -> the arena modules its top-level imports load (a package's __init__ counts as the
    package; imports inside functions are left out: they run later)."""
    import ast

    src = REPO / "src"
    modules = {".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (src / "arena").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("arena"):
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("arena")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycle_between_arena_modules():
    """The house imports one way (data -> prompts -> model / train -> predict -> kaggle): no module's top-level
    imports lead back to it."""
    graph, state, cycles = _module_imports(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert len(graph) > 50 and not cycles, cycles
