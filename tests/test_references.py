"""No stale references and no dead registry API: files named in code and settings exist, and every public method of
the task registry is used by something other than its own definition."""

from __future__ import annotations

import re

from conftest import BUNDLE_ROOT, REPO_ROOT

SOURCES = [*sorted((BUNDLE_ROOT / "scripts").rglob("*.py")), *sorted((REPO_ROOT / "bench").glob("*.py")),
           REPO_ROOT / "pyproject.toml"]
#: Where test files are named too: the tests themselves, the READMEs and the model card.
DOCUMENTS = [*sorted((REPO_ROOT / "tests").glob("*.py")), REPO_ROOT / "README.md", BUNDLE_ROOT / "docs" / "README.md"]


def test_files_named_in_code_and_settings_exist() -> None:
    tracked = {path.name for path in REPO_ROOT.rglob("*") if ".git" not in path.parts}
    missing = []
    for source in [*SOURCES, *DOCUMENTS]:
        text = source.read_text(encoding="utf-8")
        for name in set(re.findall(r"\b(test_\w+\.py)\b", text)):
            if not (REPO_ROOT / "tests" / name).is_file():
                missing.append(f"{source.relative_to(REPO_ROOT)} names tests/{name}")
        for name in set(re.findall(r"\b([A-Z][A-Z_]+\.md)\b", text)):
            if name not in tracked:
                missing.append(f"{source.relative_to(REPO_ROOT)} names {name}, which this repository does not have")
    assert not missing, missing


def test_every_public_registry_method_is_used() -> None:
    from scripts.registry import TaskRegistry

    users = "\n".join(path.read_text(encoding="utf-8") for path in  # ".name": a call or reference, not the def
                      [*SOURCES, *sorted((REPO_ROOT / "tests").glob("test_*.py")),
                       *sorted((BUNDLE_ROOT / "configs").glob("*.json"))]
                      if path.name != "test_references.py")
    unused = [name for name in vars(TaskRegistry) if not name.startswith("_")
              and not re.search(rf"\.{name}\b", users)]
    assert not unused, f"TaskRegistry methods nobody calls: {unused}"
