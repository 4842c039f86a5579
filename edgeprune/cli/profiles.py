"""``edgeprune profiles list|show``: device classes and their budgets."""

from __future__ import annotations

import argparse
from typing import Any

from edgeprune.cli._output import Output, table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("profiles", help="list and show hardware profiles",
                              description="Hardware profiles: device classes and their budgets.")
    sub = p.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="every known profile")
    show = sub.add_parser("show", help="one profile's settings and budgets")
    show.add_argument("name", metavar="NAME")
    for child in (ls, show):
        child.add_argument("--format", choices=("text", "json"), default=argparse.SUPPRESS,
                           help="text (default) or one JSON document on stdout")
        child.add_argument("--profiles-file", action="append", default=[], metavar="PATH",
                           help="an extra profile TOML file (repeatable)")
    return p


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.devices.profiles import list_profiles, load_profile, load_profile_file

    if args.profiles_command == "show":
        profile = load_profile(args.name, extra_files=args.profiles_file)
        path = list_profiles(args.profiles_file).get(profile.name, ("", ""))[1]
        out.result({"profile": profile.to_dict(), "path": str(path)}, _render_show)
        return 0
    rows = []
    for name, (origin, path) in sorted(list_profiles(args.profiles_file).items()):
        entry: dict[str, Any] = {"name": name, "origin": origin, "path": str(path)}
        try:
            prof = load_profile_file(path)
            entry.update(description=prof.description, budgets=prof.budgets and
                         {k: v for k, v in prof.to_dict()["budgets"].items() if v is not None})
        except Exception as exc:
            entry.update(error=str(exc))
        rows.append(entry)
    out.result({"profiles": rows}, _render_list)
    return 0


def _render_list(data: dict[str, Any]) -> str:
    rows = []
    for p in data["profiles"]:
        b = p.get("budgets") or {}
        lat = (f"{b['max_latency_ms']:g} ms" if "max_latency_ms" in b else
               f"x{b['max_latency_ratio']:g}" if "max_latency_ratio" in b else "")
        if lat:
            lat += f" @p{b.get('latency_percentile', 90)}"
        rows.append((p["name"], lat, f"{b['max_peak_rss_mb']:g}" if "max_peak_rss_mb" in b else "",
                     f"{b['max_model_size_mb']:g}" if "max_model_size_mb" in b else "",
                     p.get("error") or p.get("description", "")))
    return table(("NAME", "LATENCY", "RSS MB", "SIZE MB", "DESCRIPTION"), rows)


def _render_show(data: dict[str, Any]) -> str:
    p = data["profile"]
    lines = [f"{p['name']}: {p['description']}", f"  file      : {data['path']}"]
    for key in ("arch", "cores", "memory_mb", "runtimes", "precision", "input_shape", "threads"):
        value = p[key]
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        lines.append(f"  {key:<10}: {value}")
    lines.append("  budgets:")
    for key, value in p["budgets"].items():
        lines.append(f"    {key:<26}: {'-' if value is None else value}")
    return "\n".join(lines)
