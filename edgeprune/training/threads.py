"""torch's intra-op thread count, set for a block and restored — safely from several threads.

``torch.set_num_threads`` is process-wide. Two threads that each save, set and restore it (a
parallel fit evaluating while another fine-tunes) restore each other's values in the wrong order
and leave the process at a count nobody asked for. Here holders are counted under one lock: the
first holder sets its count and the last one out restores what was there before. While another
thread holds a count, a different request cannot be honoured (the setting is one number for the
whole process): it runs at the held count, which the yielded value reports. Nested requests in a
thread that holds the count alone are set and restored in order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["torch_threads"]

_LOCK = threading.Lock()
_HOLDERS: list[int] = []  # one thread id per active block
_SAVED: list[int] = []  # the count before the first holder


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` intra-op threads (``None``: leave the count alone); yields the
    count in effect."""
    if n is None:
        yield torch.get_num_threads()
        return
    me = threading.get_ident()
    with _LOCK:
        before = torch.get_num_threads()
        if not _HOLDERS:
            _SAVED[:] = [before]
        applied = all(t == me for t in _HOLDERS)
        if applied:
            torch.set_num_threads(n)
        _HOLDERS.append(me)
        in_effect = torch.get_num_threads()
    try:
        yield in_effect
    finally:
        with _LOCK:
            _HOLDERS.remove(me)
            if not _HOLDERS:
                torch.set_num_threads(_SAVED.pop())
            elif applied:
                torch.set_num_threads(before)
