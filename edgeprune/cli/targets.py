"""``edgeprune targets list|show|check``: the devices edgeprune knows and whether they work.

Also home of the target options every device command shares (``add_target_options`` /
``target_from_args``), so ``measure``, ``gate`` and ``fit`` spell them the same way.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeprune.cli._output import Output, table


def add_target_options(p: argparse.ArgumentParser, *, default: str | None = "local",
                       target_help: str | None = None) -> list[str]:
    """Add the device options (group "device") to ``p``; return their ``dest`` names (what a
    command reads back from the parsed arguments: ``fit`` checks its device settings by them).

    ``target_help`` replaces the help of ``--target`` where the command's default needs saying
    differently (``fit``: its --config file may name the target).
    """
    g = p.add_argument_group("device")
    actions = [
        g.add_argument("--target", default=default, metavar="NAME|ssh://user@host[:port]",
                       help=target_help or "a named target (edgeprune targets list) or a "
                       f"one-off SSH device (default: {default})"),
        g.add_argument("--profile", metavar="NAME", help="hardware profile for its defaults "
                       "and budgets (default: the target's own)"),
        g.add_argument("--identity-file", "-i", metavar="PATH",
                       help="SSH private key (default: ssh-agent and ~/.ssh/id_*)"),
        g.add_argument("--known-hosts", metavar="PATH", help="known-hosts file (default: the "
                       "target's, else ~/.ssh/known_hosts)"),
        g.add_argument("--accept-new-host-key", action="store_true",
                       help="record an unknown host key (like OpenSSH accept-new); a changed "
                       "key is still refused"),
        g.add_argument("--python", metavar="PATH", help="the device's Python interpreter"),
        g.add_argument("--targets-file", action="append", default=[], metavar="PATH",
                       help="an extra target TOML file (repeatable)"),
        g.add_argument("--profiles-file", action="append", default=[], metavar="PATH",
                       help="an extra profile TOML file (repeatable)"),
    ]
    return [action.dest for action in actions]


def target_from_args(args: argparse.Namespace, name: str | None = None) -> Any:
    from edgeprune.devices.targets import load_target

    return load_target(name or args.target, extra_files=args.targets_file,
                       profile=getattr(args, "profile", None), identity_file=args.identity_file,
                       known_hosts=args.known_hosts, accept_new=args.accept_new_host_key,
                       python=args.python)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("targets", help="list, show and check devices",
                              description="Named devices: where they are and how to reach them.")
    sub = p.add_subparsers(dest="targets_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="every known target and where its file is",
                        description="Every known target: kind, host, profile, description and "
                        "the TOML file it came from (built-in, ~/.config/edgeprune/targets, or "
                        "--targets-file); a later file of the same name overrides an earlier one.")
    show = sub.add_parser("show", help="one target's settings")
    show.add_argument("name", metavar="NAME")
    check = sub.add_parser(
        "check", help="connect; report device facts and runtimes present",
        description="Connect to the device, run the runner's probe with the device's Python and "
        "report device facts and every runtime found, with versions. Exits 1 with a one-line "
        "error naming what to install when the device cannot measure: Python missing or older "
        "than 3.6, numpy missing, or no runtime (onnxruntime, ai_edge_litert, tflite_runtime).")
    check.add_argument("name", metavar="NAME", nargs="?", default=None)
    for child in (ls, show, check):
        _child_format(child)
        add_target_options(child, default=None)
    return p


def _child_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default=argparse.SUPPRESS,
                   help="text (default) or one JSON document on stdout")


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.errors import UsageError

    if args.targets_command == "list":
        return _list(args, out)
    name = getattr(args, "name", None) or args.target
    if not name:
        raise UsageError("which target?", hint="give a NAME or --target ssh://user@host")
    target = target_from_args(args, name)
    if args.targets_command == "show":
        out.result({"target": target.to_dict(), "where": target.where})
        return 0
    from edgeprune.devices.measure import probe
    from edgeprune.devices.protocol import readiness_problem

    doc = probe(target, progress=None if out.json else out.progress)
    doc["target"] = target.name
    problem = readiness_problem(doc, runtimes=_profile_runtimes(args, target))
    doc["ready"] = problem is None
    if problem is not None:
        doc["error"] = {"type": type(problem).__name__, "message": problem.one_line()}
    # the facts go to stdout either way (they show what is there); the one-line error to stderr
    out.result(doc, _render_check)
    if problem is None:
        return 0
    if not out.json:
        out.error(problem.one_line(), kind=type(problem).__name__)
    return problem.exit_code


def _profile_runtimes(args: argparse.Namespace, target: Any) -> tuple[str, ...]:
    if not target.profile:
        return ()
    from edgeprune.devices.profiles import load_profile
    from edgeprune.errors import EdgepruneError

    try:
        return tuple(load_profile(target.profile, extra_files=args.profiles_file).runtimes)
    except EdgepruneError:
        return ()


BUILT_IN = "built in"  # the FILE of a target that has none: `local` when no local.toml is found


def _list(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.devices.targets import LOCAL, list_targets, load_target_file

    found = list_targets(args.targets_file)
    rows = []
    for name, (origin, path) in sorted(found.items()):
        entry: dict[str, Any] = {"name": name, "origin": origin, "path": str(path),
                                 "file": str(path)}
        try:
            t = load_target_file(path)
            entry.update(_facts(t))
        except Exception as exc:
            entry.update(error=str(exc))
        rows.append(entry)
    if LOCAL.name not in found:  # load_target("local") works without a file: list it too
        rows.append({"name": LOCAL.name, "origin": "builtin", "path": None, "file": BUILT_IN,
                     **_facts(LOCAL)})
        rows.sort(key=lambda e: e["name"])
    out.result({"targets": rows}, _render_list)
    return 0


def _facts(t: Any) -> dict[str, Any]:
    return {"kind": "local" if t.is_local else "ssh",
            "host": None if t.ssh is None else f"{t.ssh.login}@{t.ssh.host}:{t.ssh.port}",
            "profile": t.profile, "description": t.description}


def _render_list(data: dict[str, Any]) -> str:
    rows = [(t["name"], t.get("kind", "?"), t.get("host") or "", t.get("profile") or "",
             t.get("error") or t.get("description") or "", _file_column(t))
            for t in data["targets"]]
    return table(("NAME", "KIND", "HOST", "PROFILE", "DESCRIPTION", "FILE"), rows)


def _file_column(entry: dict[str, Any]) -> str:
    """The target's file (under home as ~/...), marked when it ships with edgeprune (edit a copy
    in ~/.config/edgeprune/targets instead: an upgrade replaces it)."""
    from pathlib import Path

    file = str(entry["file"])
    if file == BUILT_IN:
        return file
    home = str(Path.home())
    if home != "/" and file.startswith(home + "/"):
        file = "~" + file[len(home):]
    return f"{file} ({BUILT_IN})" if entry.get("origin") == "builtin" else file


def _render_check(data: dict[str, Any]) -> str:
    d = data.get("device", {})
    state = "runner works" if data.get("ready", True) else "NOT ready to measure (see below)"
    lines = [f"{data.get('where')}: reachable, {state}",
             f"  board/cpu : {d.get('board') or ''} {d.get('cpu_model') or ''}".rstrip(),
             f"  machine   : {d.get('machine')} {d.get('system')} {d.get('kernel')}, "
             f"{d.get('cores')} cores, {d.get('memory_total_mb')} MB RAM",
             f"  python    : {d.get('python')} ({d.get('python_executable')})"]
    if d.get("cpu_freq_mhz") or d.get("cpu_governor"):
        lines.append(f"  cpu clock : {d.get('cpu_freq_mhz')} MHz (max {d.get('cpu_freq_max_mhz')}),"
                     f" governor {d.get('cpu_governor')}")
    if d.get("temperature_c") is not None:
        lines.append(f"  temp      : {d.get('temperature_c')} °C")
    lines.append("  runtimes  :")
    for name, info in data.get("runtimes", {}).items():
        if info.get("present"):
            extra = f" providers: {', '.join(info['providers'])}" if info.get("providers") else ""
            lines.append(f"    {name:<15} {info.get('version') or '?'}{extra}")
        else:
            lines.append(f"    {name:<15} missing")
    return "\n".join(lines)
