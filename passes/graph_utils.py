"""Small graph surgery helpers shared by passes."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import ExportGraphSignature, InputKind

from mirror.passes.base import PassResult


def module_path(node: torch.fx.Node) -> str:
    """The innermost module path a node was traced under ("" for the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    return list(stack.values())[-1][0]


def ancestors(node: torch.fx.Node) -> set[torch.fx.Node]:
    """Every node ``node`` depends on (not including itself)."""
    seen: set[torch.fx.Node] = set()
    todo = list(node.all_input_nodes)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


def prune_unused_state(program: ExportedProgram) -> list[str]:
    """Drop dead nodes, then parameters/buffers/constants no node reads any more.

    Mutates ``program`` (callers pass a copy). Returns the state names removed.
    """
    graph = program.graph_module.graph
    graph.eliminate_dead_code()
    sig = program.graph_signature
    lifted = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
    placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
    dead = {
        spec.arg.name: spec.target
        for spec in sig.input_specs
        if spec.kind in lifted and not placeholders[spec.arg.name].users
    }
    for name in dead:
        graph.erase_node(placeholders[name])
    program._graph_signature = ExportGraphSignature(
        input_specs=[s for s in sig.input_specs if s.arg.name not in dead],
        output_specs=list(sig.output_specs),
    )
    for target in dead.values():
        program._state_dict.pop(target, None)
        program._constants.pop(target, None)
    graph.lint()
    program.graph_module.recompile()
    return sorted(dead.values())


_OWN_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.abspath(__file__)))


def source_line(node: torch.fx.Node) -> str:
    """``file:line`` of the model's own code that made ``node`` ('' if its stack trace has none).

    The innermost frame outside torch and outside these passes (whose decompositions keep
    the user's frames above their own); paths under the working directory are relative."""
    frames = [ln.strip() for ln in (node.meta.get("stack_trace") or "").splitlines() if ln.strip().startswith("File ")]
    for frame in reversed(frames):  # File "/path/model.py", line 42, in forward
        try:
            path, line = frame.split('"')[1], frame.split("line ")[1].split(",")[0]
        except IndexError:
            continue
        if not os.path.abspath(path).startswith(_OWN_DIRS):
            rel = os.path.relpath(path)
            return f"{path if rel.startswith('..') else rel}:{line}"
    return ""


def pick_nodes(
    program: ExportedProgram, predicate: Callable[[torch.fx.Node], Any], *, copy_program: bool = True
) -> tuple[ExportedProgram | None, list[torch.fx.Node], dict[str, Any]]:
    """The nodes a rewriting pass targets.

    Returns (the program to rewrite, its nodes that ``predicate`` picks, the pass's details
    ``{"rewritten": names}``). The program is a deep copy (the input stays untouched) unless
    ``copy_program=False``; it is None when nothing matches, and the pass changes nothing.
    """
    found = [n.name for n in program.graph.nodes if predicate(n)]
    details: dict[str, Any] = {"rewritten": found}
    if not found:
        return None, [], details
    target = copy.deepcopy(program) if copy_program else program
    return target, [n for n in target.graph.nodes if n.name in found], details


def rewrite_each(
    program: ExportedProgram,
    predicate: Callable[[torch.fx.Node], Any],
    rewrite: Callable[[ExportedProgram, torch.fx.Node], bool | None],
    *,
    prune: bool = True,
) -> PassResult:
    """A pass that rewrites, one by one, the nodes ``predicate`` picks, on a deep copy.

    ``rewrite(program, node)`` gets the copy and its node, in graph order; when it returns
    False the node is left as it is and named in ``details["left"]`` instead of
    ``details["rewritten"]`` (all left: the input, unchanged). Then
    ``prune_unused_state`` (dead nodes, unread state, recompile), or with ``prune=False``
    only a recompile. Details are ``pick_nodes``'; nothing picked: the input, unchanged.
    """
    new, nodes, details = pick_nodes(program, predicate)
    if new is None:
        return PassResult(program, changed=False, details=details)
    for node in nodes:
        if rewrite(new, node) is False:
            details.setdefault("left", []).append(node.name)
    left = set(details.get("left", ()))
    details["rewritten"] = [name for name in details["rewritten"] if name not in left]
    if not details["rewritten"]:  # every picked node was left: the input stands
        return PassResult(program, changed=False, details=details)
    if prune:
        prune_unused_state(new)
    else:
        new.graph_module.recompile()
    return PassResult(new, changed=True, details=details)


def decompose_each(program: ExportedProgram, targets: tuple[Any, ...], fn: Callable[..., Any]) -> PassResult:
    """A pass that decomposes every call of an op in ``targets`` with ``fn``.

    ``run_decompositions`` retraces a deep copy into a new program, the input untouched;
    it runs only when the graph calls one of ``targets``. Details are ``pick_nodes``'.
    """
    picked, _, details = pick_nodes(program, lambda n: n.op == "call_function" and n.target in targets,
                                    copy_program=False)  # fmt: skip
    if picked is None:
        return PassResult(program, changed=False, details=details)
    new = copy.deepcopy(program).run_decompositions(dict.fromkeys(targets, fn))
    return PassResult(new, changed=True, details=details)
