"""Which ops of a graph compute gather indices: the region a fp16 model keeps in fp32.

Shared by the ONNX and Core ML targets: in fp16, integers are exact only up to 2048, so a
decomposed sampler's linear index ``y * W + x`` must be computed in fp32.
"""

from __future__ import annotations


def index_region(
    nodes: list[tuple[str, str, list[str | None]]],
    seeds: list[str],
    allowed: frozenset[str],
) -> set[str]:
    """The ops that compute (or derive only from) gather indices.

    ``nodes``: ``(id, op type, producer id of each input or None)`` in graph order.
    ``seeds``: ids of the ops that produce index inputs.
    Walks back from the seeds through ``allowed`` op types (coordinate and index
    arithmetic), then forward: an allowed op whose non-constant inputs all come from the
    region joins it (the bilinear fractions ``x - floor(x)`` and ``1 - fx``). The walk stops
    at anything else (a conv, a gather, an activation), so it never swallows the network.
    """
    by_id = {nid: (kind, prods) for nid, kind, prods in nodes}
    region: set[str] = set()
    stack = [s for s in seeds if s in by_id and by_id[s][0] in allowed]
    while stack:
        nid = stack.pop()
        if nid in region:
            continue
        region.add(nid)
        for p in by_id[nid][1]:
            if p is not None and p in by_id and p not in region and by_id[p][0] in allowed:
                stack.append(p)
    changed = True
    while changed:
        changed = False
        for nid, kind, prods in nodes:
            if nid in region or kind not in allowed:
                continue
            real = [p for p in prods if p is not None and p in by_id]
            if real and all(p in region for p in real):
                region.add(nid)
                changed = True
    return region
