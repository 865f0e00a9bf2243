"""Our code uses MONAI, ignite and torch through their public APIs: it never writes a private attribute of their
objects, and our subclasses of their classes never reach into the private state those classes keep (every version bump
would otherwise need an audit of their internals), beyond the few names their own subclasses are meant to use.
Overriding a hook (``_compute_tensor``) is allowed."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

from conftest import BUNDLE_ROOT

EXTERNAL = ("monai", "ignite", "torch")
#: Private names that the libraries' own subclasses are meant to read (their documented extension protocol).
SUBCLASS_PROTOCOL = {
    "_do_transform": "MONAI RandomizableTransform.randomize's decision, read by every MONAI random transform",
    "_buffers": "MONAI Cumulative's buffers, None before the first append (checked by its own subclasses)",
    "_register_handlers": "MONAI Workflow's way for a subclass to attach its handlers",
}


def _modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted((BUNDLE_ROOT / "scripts").rglob("*.py")):
        if path.name == "__main__.py":  # a command: importing it would run it
            continue
        name = ".".join(path.relative_to(BUNDLE_ROOT).with_suffix("").parts).removesuffix(".__init__")
        found.append((name, ast.parse(path.read_text(encoding="utf-8"))))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _external_bases(cls: type) -> list[type]:
    return [base for base in cls.__mro__[1:] if base.__module__.split(".")[0] in EXTERNAL]


def _keeps(base: type, attribute: str) -> bool:
    """Whether an external class keeps ``attribute`` (in its class dict, or assigned as ``self.attribute``)."""
    if attribute in vars(base):
        return True
    try:
        source = inspect.getsource(base)
    except (OSError, TypeError):
        return False
    return re.search(rf"self\.{re.escape(attribute)}\b", source) is not None


def test_no_private_attribute_of_monai_ignite_or_torch_is_written_or_rewired() -> None:
    problems = []
    for module_name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Attribute) and _private(sub.attr) and ast.unparse(sub.value) != "self":
                            problems.append(f"{module_name}:{node.lineno} writes {ast.unparse(sub)}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("setattr", "object.__setattr__"):
                name = node.args[1] if len(node.args) > 1 else None
                if isinstance(name, ast.Constant) and _private(str(name.value)):
                    problems.append(f"{module_name}:{node.lineno} setattr of {name.value}")
        module = importlib.import_module(module_name)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = _external_bases(getattr(module, node.name))
            own_methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
            used = {sub.attr for sub in ast.walk(node) if isinstance(sub, ast.Attribute) and _private(sub.attr)
                    and isinstance(sub.value, ast.Name) and sub.value.id == "self"}
            for attribute in sorted(used - own_methods - set(SUBCLASS_PROTOCOL)):
                owners = [base.__qualname__ for base in bases if _keeps(base, attribute)]
                if owners:
                    problems.append(f"{module_name}.{node.name} uses self.{attribute} of {owners[0]}")
    assert not problems, "private state of MONAI/ignite/torch used:\n" + "\n".join(problems)


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The old scheduler entry wrote torch's ``_last_lr`` and the old savers rewired MONAI's private checkpoints."""
    tree = ast.parse("def restore(scheduler, rates):\n    scheduler._last_lr = rates\n")
    writes = [sub for node in ast.walk(tree) if isinstance(node, ast.Assign) for sub in node.targets
              if isinstance(sub, ast.Attribute) and _private(sub.attr)]
    assert [ast.unparse(w) for w in writes] == ["scheduler._last_lr"]
    from monai.handlers import CheckpointSaver

    assert _keeps(CheckpointSaver, "_final_checkpoint") and not _keeps(CheckpointSaver, "_run_folder")
