"""Commands over what persists and what was measured: cache ls|verify|clear, claims (one table from several bench
reports), info (versions, runtimes, weight sources). history and compare live with the history store."""

from __future__ import annotations

import sys
from pathlib import Path

from edgemodels import __version__
from edgemodels.cli import common


def add_parsers(sub, parents) -> None:
    common_, _ = parents
    c = sub.add_parser("cache", help="list (no hashing), verify (sha256 of every file) or clear the artifact cache")
    c.add_argument("action", choices=("ls", "verify", "clear"))
    c.add_argument("--json", action="store_true")
    c.add_argument("-y", "--yes", action="store_true", help="clear without asking (it asks only on a terminal)")
    c.add_argument("--cache", type=Path, default=None)
    c.set_defaults(func=cmd_cache)

    r = sub.add_parser("claims", parents=[common_], help="one paper-claims table from bench reports (e.g. one per device)")
    r.add_argument("reports", nargs="+", type=Path, help="bench --report-dir directories or their report.json")
    r.set_defaults(func=cmd_claims)

    i = sub.add_parser("info", parents=[common_], help="versions, runtimes, weight sources")
    i.add_argument("--offline", action="store_true", help="do not try the hub")
    i.set_defaults(func=cmd_info)


def cmd_cache(args) -> int:
    """ls (fast: no hashing), verify (hashes every file), clear (only our entries and leftovers; asks first)."""
    from edgemodels.store import cache

    store = cache.ArtifactCache(args.cache)
    if args.action == "clear":
        return _cache_clear(args, store)
    if args.action == "verify":
        if store.root.exists():
            store.require_cache("verify")
        rows, unhashed = [], 0
        for e in store.listing():
            if e.state == "corrupt" or (e.state == "complete" and e.manifest is not None):
                try:
                    store.verify(e.path, rehash=True)
                    rows.append({"path": str(e.path), "kind": e.kind, "intact": True, "why": ""})
                except cache.CorruptEntry as exc:
                    rows.append({"path": str(e.path), "kind": e.kind, "intact": False, "why": str(exc)})
            elif e.state == "complete":  # ARM user-lands, unpacked weights: built without a manifest of hashes
                unhashed += 1
        bad = [r for r in rows if not r["intact"]]
        human = "\n".join([f"verified {len(rows)} entries in {store.root} (sha256 of every file): "
                           f"{len(bad)} damaged (rebuilt on next use)"
                           + (f"; {unhashed} more have no file hashes (ARM user-lands, unpacked weights): "
                              "complete by their marker" if unhashed else ""),
                           *[f"  {r['why']}" for r in bad]])
        common.emit(args, {"root": str(store.root), "verified": len(rows), "damaged": bad, "unhashed": unhashed}, human)
        return 1 if bad else 0
    rows = []
    for e in store.listing():
        mf = e.manifest or {}
        rows.append({"path": str(e.path), "kind": e.kind, "state": e.state, "complete": e.state == "complete",
                     "size_bytes": e.size_bytes, "model": mf.get("model"), "quant": mf.get("quant"),
                     "seq": mf.get("seq"), "created": mf.get("created"), "why": e.why})
    if args.json:
        common.emit(args, {"root": str(store.root), "entries": rows})
    else:
        from tabulate import tabulate

        shown = {"complete": "yes", "corrupt": "NO (will rebuild)", "building": "build temp dir (cache clear removes it)",
                 "unrecognised": "not an entry (left alone)"}
        print(f"cache: {store.root}")
        print(tabulate([[r["kind"], r["model"] or "", r["quant"] or "", r["seq"] or "", f"{r['size_bytes'] / 1e6:.1f}",
                         shown[r["state"]], Path(r["path"]).name] for r in rows],
                       headers=["kind", "model", "quant", "seq", "MB", "complete", "entry"]))
    return 0


def _cache_clear(args, store) -> int:
    from edgemodels.store import cache

    if store.root.exists() and not store.is_cache():
        store.clear()  # raises CacheError naming the directory
    doomed = [e for e in store.listing() if e.state != "unrecognised"]
    if doomed and not args.yes and sys.stdin is not None and sys.stdin.isatty():
        mb = sum(e.size_bytes for e in doomed) / 1e6
        prompt = f"remove {len(doomed)} entries and build leftovers ({mb:.1f} MB) from {store.root}? [y/N] "
        print(prompt, end="", flush=True, file=sys.stderr)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print("nothing removed", file=sys.stderr)
            return 1
    res: cache.Cleared = store.clear()
    out = {"root": str(store.root), "removed": len(res.removed), "leftovers": len(res.leftovers),
           "busy": [str(p) for p in res.busy], "kept": [str(p) for p in res.kept]}
    human = (f"removed {len(res.removed)} entries and {len(res.leftovers)} build leftovers from {store.root}"
             + (f"; {len(res.busy)} in use by a running build, left alone" if res.busy else "")
             + (f"; {len(res.kept)} directories without an entry marker left alone" if res.kept else ""))
    common.emit(args, out, human)
    return 0


def cmd_info(args) -> int:
    from edgemodels.store import cache
    from edgemodels.build import data, models
    from edgemodels.run import runtime
    from edgemodels.build.pipeline import library_versions

    store = cache.ArtifactCache(args.cache)
    weights = {}
    for name in models.REGISTRY:
        try:
            w = models.resolve(name, cache_root=store.root, offline=True if args.offline else None)
            weights[name] = {"source": w.source, "pretrained": w.pretrained,
                             "path": str(w.path) if w.path else None, "why": list(w.trail)}
        except Exception as exc:  # noqa: BLE001 - info reports, never fails
            weights[name] = {"error": str(exc)}
    out = {"edgemodels": __version__, "python": sys.version.split()[0], "libraries": library_versions(),
           "runtimes": [f"{r.name} {r.version}" for r in runtime.available()],
           "cache": str(store.root), "data_default": data.default_spec(), "weights": weights,
           "hf_hub_offline": models.hub_offline()}
    human = "\n".join([
        f"edgemodels {__version__} (python {out['python']})",
        "libraries: " + ", ".join(f"{k} {v}" for k, v in out["libraries"].items()),
        "runtimes:  " + (", ".join(out["runtimes"]) or "none installed"),
        f"cache:     {out['cache']}",
        f"data:      {out['data_default']} (default)",
        "weights:",
        *[f"  {k:11s} {v.get('source', 'error')}{'' if v.get('pretrained', True) else ' (random init: ' + '; '.join(v['why']) + ')'}"
          for k, v in weights.items()],
    ])
    common.emit(args, out, human)
    return 0


def cmd_claims(args) -> int:
    from edgemodels.report.claims import merge_claims
    from edgemodels.report.tables import merged_claims_table

    merged = merge_claims(args.reports)
    common.emit(args, {"claims": merged}, merged_claims_table(merged))
    return 0
