"""The one module that imports matplotlib: figures without pyplot's global state.

Plots are drawn on a plain :class:`matplotlib.figure.Figure` (no pyplot, no global figure
manager), so drawing from several threads or inside a long-lived process leaks nothing and
needs no ``close()``. matplotlib is optional (the ``plots`` extra): :func:`figure` raises
:class:`PlottingUnavailable` (an ``ImportError``) naming the fix when it is missing, and callers
leave the plot out rather than failing the job.
"""

from __future__ import annotations

from typing import Any

from edgeprune.errors import PlottingUnavailable

__all__ = ["INSTALL_HINT", "PlottingUnavailable", "figure", "png_bytes"]

INSTALL_HINT = "pip install matplotlib (or the 'plots' extra: pip install 'edgeprune[plots]')"


def figure(width_in: float, height_in: float, *, dpi: int = 110) -> tuple[Any, Any]:
    """A new ``(figure, axes)`` pair of the given size in inches."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlottingUnavailable("matplotlib is not installed", hint=INSTALL_HINT) from exc
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    return fig, fig.add_subplot()


def png_bytes(fig: Any, *, dpi: int | None = None, tight: bool = True) -> bytes:
    """The figure rendered as PNG (Agg)."""
    import io

    buffer = io.BytesIO()
    kwargs: dict[str, Any] = {"format": "png"}
    if dpi is not None:
        kwargs["dpi"] = dpi
    if tight:
        kwargs["bbox_inches"] = "tight"
    fig.savefig(buffer, **kwargs)
    return buffer.getvalue()
