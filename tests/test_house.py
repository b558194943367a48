"""The house rules, checked: no module imports main.py, no import cycles, no function over 80
lines (the parsers and the plotting code aside), the README's length, links and layout."""
import ast
import glob
import os
import re

from conftest import ROOT

PACKAGES = ("losses", "models", "bench")


def project_modules():
    """{module name: path} of the project's Python files outside tests/."""
    out = {}
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            out[name[:-3]] = os.path.join(ROOT, name)
    for package in PACKAGES:
        for name in os.listdir(os.path.join(ROOT, package)):
            if name.endswith(".py"):
                module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
                out[module] = os.path.join(ROOT, package, name)
    return out


def imports_of(module, path, modules):
    """The project modules `module` imports anywhere in its file (lazy imports included)."""
    found = set()
    package = module.split(".")[0] if module.split(".")[0] in PACKAGES else None
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level and package:
                base = package if not node.module else f"{package}.{node.module}"
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in modules and name != module:
                found.add(name)
    return found


def graph():
    modules = project_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def test_no_module_imports_main():
    importers = [m for m, deps in graph().items() if "main" in deps]
    assert not importers, f"main.py is a script; these import it: {importers}"


def test_no_import_cycles():
    edges = graph()
    # a package's __init__ importing its own modules is how a package is made, not a cycle
    edges = {m: {d for d in deps if not (m in PACKAGES and d.startswith(m + "."))}
             for m, deps in edges.items()}
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for d in sorted(edges.get(m, ())):
            if d.split(".")[0] in PACKAGES and d not in edges:
                continue
            assert state.get(d) != "open", f"import cycle: {' -> '.join(path[path.index(d):] + [d])}"
            if d not in state:
                visit(d)
        path.pop()
        state[m] = "done"
    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_no_function_over_80_lines():
    long = []
    for module, path in project_modules().items():
        if module == "plots":
            continue  # figure code is a list of drawing calls
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80 and not node.name.startswith("build_parser"):
                    long.append(f"{module}.{node.name}: {lines}")
    assert not long, long


def readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_readme_is_short_and_its_links_resolve():
    text = readme()
    assert len(text.splitlines()) <= 250
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"^\[\w+\]: (\S+)", text, re.M)
    local = [t for t in targets if not t.startswith(("http://", "https://", "#"))]
    assert local, "the README links no file"
    for target in local:
        assert os.path.exists(os.path.join(ROOT, target.split("#")[0])), target
    anchors = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, anchor


def test_readme_layout_matches_the_files():
    text = readme()
    layout = text.split("## Layout", 1)[1].split("```")[1]
    listed = {line.split()[0] for line in layout.strip().splitlines() if line and not line[0].isspace()}
    for entry in listed:
        assert os.path.exists(os.path.join(ROOT, entry)), entry
    files = {f for f in os.listdir(ROOT) if f.endswith(".py")}
    folders = {f + "/" for f in ("losses", "models", "bench", "results", "docs", "imgs", "tests")}
    assert files | folders <= listed, (files | folders) - listed


def test_the_docs_take_their_numbers_from_the_results_page():
    # a four-decimal figure (an accuracy, a MAP@R, a mean or a std) in an answer page is one
    # the generated results page prints; differences and p-values are derived from those
    page = open(os.path.join(ROOT, "results", "README.md")).read()
    pages = glob.glob(os.path.join(ROOT, "docs", "*.md"))
    assert len(pages) > 1
    for path in pages:
        text = open(path).read()
        for number in re.findall(r"(?<![\d.])\d\.\d{4}(?!\d)", text):
            assert number in page, (os.path.basename(path), number)


def test_readme_headline_is_what_the_report_writes():
    import report
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert report.with_headline(readme(), report.headline("results")) == readme()
        assert report.with_headline(readme(), report.speed_headline("results"),
                                    report.SPEED_BEGIN) == readme()
    finally:
        os.chdir(cwd)
