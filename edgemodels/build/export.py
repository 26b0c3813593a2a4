"""Export a device's bench artifacts to a directory, and read them back on the device with no build side.

Why: a Raspberry Pi cannot install TensorFlow (a Pi 3 cannot at all) and a copied cache always misses (its
keys hold the build-side library versions). `python -m edgemodels export --device pi3 DIR` builds, through
the cache, every artifact the bench matrix for that device and scale needs and writes into DIR:

    index.json                   device, scale, data fingerprint, labels, samples, who built it, sha256 of every file
    cases/<case>/model.tflite    the artifact
    cases/<case>/manifest.json   its build manifest (params, weight bytes, pad id, trained or not, ops)
    feeds/<sha>.npz              the evaluation split pre-tokenized for that model and length: token ids, labels
    reference/<case>.npy         x86 outputs on the compat sample (what the device's outputs are compared with)

On the device `pytest bench/ --device=pi3 --artifacts DIR` reads them (`Export.open`) with only numpy and a
TFLite runtime: no tokenizer, no TensorFlow, no network. Every file is checked against its sha256 before
use (the small ones when DIR is opened, each .tflite when its case first loads it).

Importing this module needs only the standard library and numpy; the build side is imported by `export()`.
"""

from __future__ import annotations

import json
import platform
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgemodels import LABELS
from edgemodels.build import export_dir
from edgemodels.build.export_dir import FORMAT, INDEX, ExportError, read_index
from edgemodels.store.files import atomic_write_text, sha256_file
from edgemodels.study import matrix as suite

THROUGHPUT_SAMPLE = suite.THROUGHPUT_SAMPLE  # the tweets the throughput suite cycles through

REFERENCE_THREADS = 1
"""The x86 reference outputs are computed at one thread: reproducible, like the emulated runs they mirror."""


# --------------------------------------------------------------------------------------------
# Reading an export (the device side: numpy + a runtime)


@dataclass(frozen=True)
class ExportedArtifact:
    """What the bench asks of a built artifact (pipeline.Artifact's fields), read from an export."""

    tflite: Path
    manifest: dict[str, Any]
    cache_hit: bool = True

    @property
    def size_bytes(self) -> int:
        return int(self.manifest["size_bytes"])

    @property
    def pretrained(self) -> bool:
        return bool(self.manifest.get("pretrained"))

    @property
    def tokenizer_dir(self) -> None:
        """None: an export carries pre-tokenized feeds, never a tokenizer."""
        return None


def _fix(idx: Mapping[str, Any]) -> str:
    return (f"re-export it on the workstation: python -m edgemodels export --device {idx.get('device')} "
            f"--scale {idx.get('scale')} DIR")


class Export:
    """An export directory opened for a bench run: index checked, small files verified, .tflite on first use."""

    def __init__(self, root: Path, index: dict[str, Any]):
        self.root, self.index = root, index
        self.kept: tuple[str, ...] = ()  # what `export` found in an earlier export that no export wrote, and kept
        self._verified: set[str] = set()
        self._feeds: dict[str, tuple[list[list[int]], np.ndarray]] = {}

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str, *, device: str | None = None, scale: str | None = None) -> "Export":
        """Open `root`, refusing a missing directory, a non-export, or one made for another device/scale."""
        root = Path(root).expanduser()
        if not root.is_dir():
            raise ExportError(f"--artifacts {root}: no such directory; copy an export there (made on the "
                              "workstation with `python -m edgemodels export --device D DIR`)")
        index = read_index(root)
        if index is None:
            raise ExportError(f"--artifacts {root}: no {INDEX} with format {FORMAT!r}: not an edgemodels export; "
                              "make one with `python -m edgemodels export --device D DIR`")
        want = {"device": device, "scale": scale}
        bad = {k: v for k, v in want.items() if v is not None and index.get(k) != v}
        if bad:
            raise ExportError(
                f"--artifacts {root} was exported for --device={index.get('device')} --scale={index.get('scale')}, "
                f"not for this run's --device={device} --scale={scale}: run with --device={index.get('device')} "
                f"--scale={index.get('scale')}, or export for this one (python -m edgemodels export --device "
                f"{device} --scale {scale} DIR)")
        exp = cls(root, index)
        for rel in index["files"]:  # everything but the models now (small); each model on first use
            if not rel.endswith(".tflite"):
                exp.verify(rel)
        return exp

    def verify(self, rel: str) -> Path:
        """The file's path once its sha256 matches the index; an ExportError naming it otherwise."""
        path = self.root / rel
        want = self.index["files"].get(rel)
        if want is None:
            raise ExportError(f"{path}: not listed in {self.root / INDEX}; {_fix(self.index)}")
        if rel not in self._verified:
            if not path.is_file():
                raise ExportError(f"{path}: missing from the export (listed in {INDEX}); copy the whole directory "
                                  f"again or {_fix(self.index)}")
            got = sha256_file(path)
            if got != want:
                raise ExportError(f"{path}: sha256 {got[:16]}... does not match the export index ({want[:16]}...): "
                                  f"the file changed or was damaged after export; copy it again or {_fix(self.index)}")
            self._verified.add(rel)
        return path

    # -- what the bench asks ------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self.index["device"]

    @property
    def scale(self) -> str:
        return self.index["scale"]

    @property
    def data_spec(self) -> str:
        return self.index["data"]["spec"]

    @property
    def data_kind(self) -> str:
        return self.index["data"]["kind"]

    @property
    def max_examples(self) -> int | None:
        """The --max-examples the export was built with (a reduced training budget), or None."""
        return self.index.get("filters", {}).get("max_examples")

    @property
    def built_on(self) -> str:
        """The machine that built the export and computed the x86 reference, e.g. 'ws (x86_64)'."""
        b = self.index["built_on"]
        return f"{b['host']} ({b['arch']})"

    @property
    def reference_label(self) -> str:
        r = self.index["reference"]
        return f"{self.index['built_on']['arch']} reference exported from {self.built_on} ({r['runtime']} {r['runtime_version']})"

    def case_ids(self) -> tuple[str, ...]:
        return tuple(self.index["cases"])

    def entry(self, case_id: str) -> dict[str, Any]:
        try:
            return self.index["cases"][case_id]
        except KeyError:
            raise ExportError(f"--artifacts {self.root}: no case {case_id} in this export (it holds "
                              f"{', '.join(self.index['cases'])}); export it with --models/--modes covering it") from None

    def conversion_failure(self, case_id: str) -> str | None:
        return self.entry(case_id).get("conversion_failure")

    def artifact(self, case_id: str) -> ExportedArtifact:
        e = self.entry(case_id)
        manifest = json.loads(self.verify(e["manifest"]).read_text(encoding="utf-8"))
        return ExportedArtifact(self.verify(e["tflite"]), manifest)

    def checkpoint_bytes(self, model: str) -> int | None:
        return (self.index.get("checkpoint_bytes") or {}).get(model)

    @property
    def n_eval(self) -> int:
        return int(self.index["eval"]["n"])

    def _load_feeds(self, case_id: str) -> tuple[list[list[int]], np.ndarray]:
        rel = self.entry(case_id)["feeds"]
        if rel not in self._feeds:
            with np.load(self.verify(rel)) as z:
                ids, offsets, labels = z["ids"], z["offsets"], z["labels"]
            self._feeds[rel] = ([ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])],
                                np.asarray(labels, dtype=np.int64))
        return self._feeds[rel]

    def sample_index(self, n: int | None) -> np.ndarray | None:
        """Positions in the evaluation split of the seeded sample of n tweets the bench draws (None: all)."""
        if n is None or n >= self.n_eval:
            return None
        samples = self.index["eval"]["samples"]
        if str(n) not in samples:
            raise ExportError(f"--artifacts {self.root}: no sample of {n} tweets was exported (have "
                              f"{', '.join(samples)}); {_fix(self.index)}")
        return np.asarray(samples[str(n)], dtype=np.int64)

    def ids(self, case_id: str, n: int | None = None) -> list[list[int]]:
        """Token ids of the evaluation split (or its n-tweet sample), tokenized for this case at export."""
        ids, _ = self._load_feeds(case_id)
        pick = self.sample_index(n)
        return ids if pick is None else [ids[i] for i in pick]

    def labels(self, case_id: str, n: int | None = None) -> np.ndarray:
        _, labels = self._load_feeds(case_id)
        pick = self.sample_index(n)
        return labels if pick is None else labels[pick]

    def feeds(self, case_id: str, n: int | None = None) -> list[dict[str, np.ndarray]]:
        from edgemodels.build.convert import to_feeds

        e = self.entry(case_id)
        seq = None if e["seq"] == "dynamic" else int(e["seq"])
        return [to_feeds(x, seq, int(e["pad_id"])) for x in self.ids(case_id, n)]

    def reference_outputs(self, case_id: str) -> np.ndarray:
        """The x86 outputs on the compat sample (index['eval']['compat_n'] tweets)."""
        return np.load(self.verify(self.entry(case_id)["reference"]), allow_pickle=False)

    @property
    def compat_n(self) -> int:
        return int(self.index["eval"]["compat_n"])

    def accuracy(self, case_id: str, *, runtime_name: str | None, threads: int | None = None,
                 workers: int | None = None, quiet: bool = True):
        """evaluate.evaluate() on the exported ids (evaluate.evaluate_ids: the same plan, run and scores); no tokenizer."""
        from edgemodels.run import evaluate

        start = time.perf_counter()
        art = self.artifact(case_id)
        ids, labels = self._load_feeds(case_id)
        model, how = evaluate.load_planned(art.tflite, runtime_name=runtime_name, threads=threads, workers=workers)
        return evaluate.evaluate_ids(model, how, ids, labels, pad=int(art.manifest["pad_id"]),
                                     data_labels=tuple(self.index["labels"]),
                                     majority_accuracy=float(self.index["eval"]["majority_accuracy"]),
                                     model_labels=art.manifest.get("labels"), quiet=quiet, name=case_id, started=start)

    def summary(self) -> dict[str, Any]:
        i = self.index
        return {"dir": str(self.root), "device": i["device"], "scale": i["scale"], "data": i["data"],
                "built_on": i["built_on"], "created": i["created"], "libs": i["libs"], "cases": list(i["cases"])}


# --------------------------------------------------------------------------------------------
# Writing an export (the workstation: the build side)


@dataclass(frozen=True)
class ExportRequest:
    device: str
    scale: str = "ci"
    data: str = "builtin"
    models: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()
    max_examples: int | None = None


def select_cases(scale, models: Sequence[str] = (), modes: Sequence[str] = ()) -> tuple:
    """The scale's cases kept by --models/--modes; a name not in the matrix is an ExportError listing the valid ones."""
    for flag, asked, field in (("--models", models, "model"), ("--modes", modes, "quant")):
        valid = list(dict.fromkeys(getattr(c, field) for c in scale.cases))
        bad = [x for x in asked if x not in valid]
        if bad:
            raise ExportError(f"{flag}: {', '.join(map(repr, bad))} not in the {scale.name} scale's matrix; "
                              f"valid: {', '.join(valid)}")
    cases = tuple(c for c in scale.cases if (not models or c.model in models) and (not modes or c.quant in modes))
    if not cases:
        raise ExportError(f"--models/--modes: no case of the {scale.name} scale is {'/'.join(models) or 'any model'} "
                          f"in {'/'.join(modes) or 'any mode'}")
    return cases


def _write_ids(path: Path, ids: list[list[int]], labels: np.ndarray) -> None:
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in ids])
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
    np.savez(path, ids=flat, offsets=offsets, labels=np.asarray(labels, dtype=np.int64))


def _positions(ds, sample) -> list[int]:
    """Where each example of `sample` (a Dataset.sample of ds: the same objects) sits in ds."""
    where = {id(e): i for i, e in enumerate(ds.examples)}
    return [where[id(e)] for e in sample.examples]


def export(req: ExportRequest, out: Path | str, store=None, log: Callable[[str], None] = lambda _m: None) -> Export:
    """Build (through the cache) what `pytest bench/ --device=D --scale=S --artifacts OUT` needs and write OUT.

    Atomic: everything goes to a temporary directory beside OUT, which is renamed into place last (an earlier
    export at OUT is replaced only then: what it wrote goes, what the user added is kept). A directory that is
    neither empty nor an export that lists its files is refused. See export_dir for the rules.
    """
    from edgemodels.store import cache as cache_mod
    from edgemodels import devices
    from edgemodels.build import convert, data, pipeline
    from edgemodels.run import evaluate, runtime
    from edgemodels.study import expected
    from edgemodels.build.convert import ConversionError

    out = Path(out).expanduser().absolute()
    export_dir.inspect(out)  # a refusal before any work; again under the lock, and before placing
    if req.device not in devices.NAMES:
        raise ExportError(f"--device {req.device!r} is not a known device; valid: {', '.join(devices.NAMES)}")
    profile = devices.get(req.device)
    scale = suite.get_scale(req.scale)
    cases = select_cases(scale, req.models, req.modes)
    spec = data.parse_spec(req.data)
    store = store or cache_mod.ArtifactCache()
    host_rt = next((r for r in runtime.available() if r.name in ("ai-edge-litert", "tensorflow")), None)
    if host_rt is None:
        raise ExportError("export needs ai-edge-litert (or tensorflow) here for the x86 reference outputs: "
                          "pip install ai-edge-litert")

    eval_set = evaluate.evaluation_set(req.data, scale.eval_examples)  # the tweets the bench's accuracy suite scores
    samples = {str(k): _positions(eval_set, eval_set.sample(k)) for k in {scale.emulation_examples, THROUGHPUT_SAMPLE}
               if k < len(eval_set.examples)}
    compat = np.asarray(samples.get(str(scale.emulation_examples), range(len(eval_set.examples))), dtype=np.int64)
    labels = eval_set.label_ids()

    with export_dir.locked(out):  # from here to the end: the leftovers beside OUT have no live writer
        export_dir.sweep(out, log)
        export_dir.inspect(out)
        tmp = export_dir.new_temp(out)
        try:
            entries: dict[str, dict[str, Any]] = {}
            feeds_done: dict[tuple[str, str], str] = {}
            for case in cases:
                breq = pipeline.request_for(case, scale, req.data, req.max_examples)
                entry: dict[str, Any] = {"model": case.model, "quant": case.quant, "seq": case.seq_label}
                log(f"export: {case.id}: building (cached)")
                try:
                    art = pipeline.build(breq, store)
                except ConversionError as exc:
                    known = expected.conversion_failure(case)  # built-in records: an export runs no conftest.py
                    if known is None:
                        raise
                    first = str(exc).splitlines()[0][:160]
                    entry["conversion_failure"] = f"{case.id} does not convert: {known.reason} ({first})"
                    entries[case.id] = entry
                    continue
                d = tmp / "cases" / case.id
                d.mkdir(parents=True)
                shutil.copyfile(art.tflite, d / "model.tflite")
                (d / "manifest.json").write_text(json.dumps(art.manifest, indent=1, sort_keys=True, default=str),
                                                 encoding="utf-8")
                length = case.seq or art.manifest["max_length"]
                tok_key = (art.manifest["trained_entry"], str(length))
                if tok_key not in feeds_done:
                    ids = evaluate.encode_dataset(eval_set, art.tokenizer_dir, length)
                    f = tmp / "feeds" / f"{uuid.uuid4().hex}.npz"
                    f.parent.mkdir(exist_ok=True)
                    _write_ids(f, ids, labels)
                    named = f.with_name(f"{sha256_file(f)[:32]}.npz")
                    f.rename(named)
                    feeds_done[tok_key] = f"feeds/{named.name}"
                with np.load(tmp / feeds_done[tok_key]) as z:
                    flat, offsets = z["ids"], z["offsets"]
                compat_ids = [flat[offsets[i]:offsets[i + 1]].tolist() for i in compat]
                model = runtime.load(art.tflite, runtime=host_rt.name, num_threads=REFERENCE_THREADS)
                ref = np.stack([np.asarray(model.run(convert.to_feeds(x, case.seq, art.manifest["pad_id"]))).reshape(-1)
                                for x in compat_ids]).astype(np.float32)
                (tmp / "reference").mkdir(exist_ok=True)
                np.save(tmp / "reference" / f"{case.id}.npy", ref, allow_pickle=False)
                entry.update(tflite=f"cases/{case.id}/model.tflite", manifest=f"cases/{case.id}/manifest.json",
                             feeds=feeds_done[tok_key], reference=f"reference/{case.id}.npy",
                             pad_id=int(art.manifest["pad_id"]), max_length=int(art.manifest["max_length"]),
                             size_bytes=art.size_bytes)
                entries[case.id] = entry
            checkpoint = {}
            if any(c.model == "bert-large" and c.quant == "fp32" and "tflite" in entries[c.id] for c in cases):
                log("export: bert-large training checkpoint size (cached)")
                large = next(c for c in cases if c.model == "bert-large" and c.quant == "fp32")
                breq = pipeline.request_for(large, scale, req.data, req.max_examples)
                checkpoint["bert-large"] = int(pipeline.training_checkpoint(breq, store).manifest["size_bytes"])
            files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            import edgemodels

            index = {
                "format": FORMAT, "device": req.device, "device_title": profile.title, "scale": scale.name,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "data": {"spec": req.data, "kind": spec.kind, "split": spec.evaluation_split,
                         "fingerprint": eval_set.fingerprint},
                "labels": list(getattr(eval_set, "labels", LABELS)),  # the data's classes, in label-id order
                "eval": {"n": len(eval_set.examples), "majority_accuracy": eval_set.majority_accuracy(),
                         "samples": samples, "compat_n": int(len(compat))},
                "built_on": {"host": socket.gethostname(), "arch": platform.machine(), "os": platform.platform()},
                "libs": {"edgemodels": edgemodels.__version__, **pipeline.library_versions(),
                         "numpy": np.__version__, host_rt.name: host_rt.version},
                "reference": {"runtime": host_rt.name, "runtime_version": host_rt.version, "threads": REFERENCE_THREADS,
                              "arch": platform.machine()},
                "filters": {"models": list(req.models), "modes": list(req.modes), "max_examples": req.max_examples},
                "checkpoint_bytes": checkpoint,
                "cases": entries,
                "files": files,
            }
            atomic_write_text(tmp / INDEX, json.dumps(index, indent=1))
            kept = export_dir.place(tmp, out, log)
        except BaseException as exc:
            if tmp.exists():
                try:
                    left = export_dir.discard(tmp)  # what it wrote; anything of the user's moved in stays
                except OSError as gone:  # the error being raised is the one to show; the next export sweeps tmp
                    left = [f"(not removed: {gone.strerror})"]
                if left:
                    log(f"export: left {tmp} in place: it holds {', '.join(left)}, which could not be moved back "
                        f"into {out}; move them back")
            if (err := export_dir.write_error(exc, out)) is not None:
                raise err from exc
            raise
    log(f"export: wrote {out}")
    exp = Export.open(out, device=req.device, scale=scale.name)
    exp.kept = kept
    return exp
