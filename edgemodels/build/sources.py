"""Model sources: every place a model is named (CLI --model, pytest --models, the Python API) takes one of

* a registered name (``minilm-l6``, ... in `models.REGISTRY`);
* ``dir:PATH`` -- a Hugging Face format directory (config.json + weights + tokenizer), any architecture
  transformers has a ``TF*ForSequenceClassification`` class for (chosen by config.json's model_type);
* ``hf:ORG/NAME`` -- a hub repository (or its copy in the HF cache; ``HF_HUB_OFFLINE=1`` is honoured);
* ``tflite:PATH`` -- a ready .tflite, used as it is (never built): its tokenizer from a ``tokenizer/``
  directory beside it (or ``--tokenizer DIR``), its class names from an edgemodels manifest beside it (or
  ``--labels a,b,c``).

Why one module: a spec string is parsed in exactly one place, into a small frozen `ModelSource`, with a
one-line error for each bad spec; and a source's identity (the sha256 of its config and weights files, or
the hub revision) goes into the cache key, so two different directories never share an artifact.
TensorFlow and transformers are imported only where weights are resolved, not when a spec is parsed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from edgemodels.store.files import sha256_file
from edgemodels.errors import EdgeModelsError

KINDS = ("registered", "dir", "hf", "tflite")
PREFIXES = ("dir:", "hf:", "tflite:")
FORMS = ("a registered name ({names}), 'dir:PATH' (a Hugging Face format directory: config.json, weights, "
         "tokenizer), 'hf:ORG/NAME' (the hub or its cache) or 'tflite:PATH' (a ready .tflite, used as it is)")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


class SourceError(EdgeModelsError, ValueError):
    """A model spec that cannot be used; the message names the spec, what is wrong and the fix."""


def _forms() -> str:
    from edgemodels.build.models import REGISTRY

    return FORMS.format(names=", ".join(REGISTRY))


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. `ref`: the registered name, an absolute path, or ORG/NAME for the hub."""

    kind: str
    ref: str
    tokenizer: Path | None = None  # tflite: only (a directory with tokenizer.json or vocab.txt)
    labels: tuple[str, ...] | None = None  # tflite: only (the class names, in the order of its outputs)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SourceError(f"unknown model source kind {self.kind!r}; valid: {', '.join(KINDS)}")

    def __str__(self) -> str:
        return self.ref if self.kind == "registered" else f"{self.kind}:{self.ref}"

    @property
    def spec(self) -> str:
        """The text form, as a user types it (and as BuildRequest.model / suite.Case.model hold it)."""
        return str(self)

    @property
    def registered(self) -> bool:
        return self.kind == "registered"

    @property
    def path(self) -> Path | None:
        return Path(self.ref) if self.kind in ("dir", "tflite") else None

    @property
    def name(self) -> str:
        """A short readable name: the registered name, the directory's or file's name, the hub NAME."""
        if self.kind == "registered":
            return self.ref
        if self.kind == "hf":
            return self.ref.split("/", 1)[1]
        p = Path(self.ref)
        return p.stem if self.kind == "tflite" else p.name

    @property
    def slug(self) -> str:
        """A file-name-safe prefix for cache directory names (the key's digest, not this, keeps sources apart)."""
        if self.kind == "registered":
            return self.ref
        return f"{self.kind}-" + (_SLUG.sub("-", self.name).strip("-") or "model")


def slug_for(spec: str) -> str:
    """`ModelSource.slug` from the text alone (no file checks): test ids and cache entry names stay file-name-safe."""
    text = str(spec).strip()
    if not is_source_spec(text):
        return text
    kind, _, rest = text.partition(":")
    return ModelSource(kind.lower(), rest.strip().rstrip("/") or "model").slug


def is_source_spec(text: str) -> bool:
    """True for 'dir:', 'hf:' and 'tflite:' specs (as opposed to a registered name)."""
    return str(text).strip().startswith(PREFIXES)


def parse(spec: str | ModelSource, *, tokenizer: str | Path | None = None, labels: str | None = None,
          named: Mapping[str, str | ModelSource] | None = None) -> ModelSource:
    """Parse a model spec; paths must exist now (an error names the spec and the fix).

    `named`: extra names (e.g. from a conftest.py's `pytest_edgemodels_add_model_sources` hook) -> specs.
    `tokenizer` / `labels` apply to a tflite: source only (the CLI's --tokenizer and --labels).
    """
    if isinstance(spec, ModelSource):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"model spec must be a non-empty string, got {spec!r}; valid forms: {_forms()}")
    text = spec.strip()
    from edgemodels.build.models import REGISTRY

    if text in REGISTRY:
        return ModelSource("registered", text)
    if named and text in named:
        return parse(named[text], tokenizer=tokenizer, labels=labels)
    kind, sep, rest = text.partition(":")
    kind, rest = kind.lower(), rest.strip()
    if not sep or f"{kind}:" not in PREFIXES:
        extra = f", or one added by a conftest.py: {', '.join(named)}" if named else ""
        raise SourceError(f"unknown model {spec!r}; valid forms: {_forms()}{extra}")
    if not rest:
        raise SourceError(f"model spec {spec!r}: nothing after '{kind}:'; valid forms: {_forms()}")
    if kind == "hf":
        if not _HUB_ID.match(rest):
            raise SourceError(f"model spec {spec!r}: a hub id is ORG/NAME (e.g. hf:google-bert/bert-base-uncased)")
        return ModelSource("hf", rest)
    path = Path(os.path.abspath(os.path.expanduser(rest)))
    if kind == "dir":
        check_model_dir(path, spec)
        return ModelSource("dir", str(path))
    return _parse_tflite(spec, path, tokenizer, labels)


def check_model_dir(path: Path, spec: str) -> None:
    """config.json with a model_type, a weights file and a tokenizer: what a dir: build needs."""
    from edgemodels.build import models

    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise SourceError(f"model spec {spec!r}: {path} {what}; give a directory written by save_pretrained")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise SourceError(f"model spec {spec!r}: {path} has no config.json; save the model there with "
                          "model.save_pretrained(DIR) (config.json + model.safetensors or tf_model.h5)")
    try:
        model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise SourceError(f"model spec {spec!r}: {cfg} is not a JSON object ({exc}); re-save it with "
                          "save_pretrained") from None
    if not model_type:
        raise SourceError(f"model spec {spec!r}: {cfg} has no model_type; re-save it with save_pretrained")
    if not models._weight_files(path):
        raise SourceError(f"model spec {spec!r}: {path} has no weights file (model.safetensors, tf_model.h5 or "
                          "pytorch_model.bin); save them with model.save_pretrained(DIR)")
    if not models._has_tokenizer(path):
        raise SourceError(f"model spec {spec!r}: {path} has no tokenizer (tokenizer.json or vocab.txt); save it "
                          "there too: tokenizer.save_pretrained(DIR)")


def _parse_tflite(spec: str, path: Path, tokenizer: str | Path | None, labels: str | None) -> ModelSource:
    from edgemodels.build import models

    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise SourceError(f"model spec {spec!r}: {path} {what}; give an existing .tflite file")
    tok = Path(os.path.abspath(os.path.expanduser(str(tokenizer)))) if tokenizer else path.parent / "tokenizer"
    if not models._has_tokenizer(tok):
        raise SourceError(
            f"model spec {spec!r}: no tokenizer (tokenizer.json or vocab.txt) in {tok}; put the model's tokenizer "
            "in a tokenizer/ directory beside the .tflite or pass --tokenizer DIR")
    names = given_labels(path, labels)
    if names is None:
        raise SourceError(
            f"model spec {spec!r}: the class names of {path.name}'s outputs are unknown (no edgemodels manifest.json "
            "beside it); pass them in output order: --labels negative,positive")
    return ModelSource("tflite", str(path), tok, names)


def parse_labels(text: str) -> tuple[str, ...]:
    """'a,b,c' -> ('a', 'b', 'c'): at least 2 distinct, non-empty class names (lower-cased, as the data readers do)."""
    names = tuple(n.strip().lower() for n in str(text).split(","))
    if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
        raise SourceError(f"--labels {text!r}: give at least 2 distinct, non-empty class names in the order of the "
                          "model's outputs, e.g. --labels negative,positive")
    return names


def given_labels(tflite: Path, labels: str | None) -> tuple[str, ...] | None:
    """The class names of `tflite`'s outputs: --labels where given, else its manifest's (None: neither).

    --labels that contradict the edgemodels manifest describing this very file (its size_bytes is the file's, or
    it records none) are a SourceError: a different order would silently mislabel every prediction."""
    recorded = manifest_labels(tflite)
    if not labels:
        return recorded
    names = parse_labels(labels)
    if recorded is not None and names != recorded and _manifest_describes(Path(tflite)):
        raise SourceError(
            f"--labels {labels}: {Path(tflite).parent / 'manifest.json'} records {Path(tflite).name}'s outputs as "
            f"{','.join(recorded)}; drop --labels (the manifest is read) or, if the manifest is wrong, fix or remove "
            "it")
    return names


def _manifest_describes(tflite: Path) -> bool:
    try:
        manifest = json.loads((tflite.parent / "manifest.json").read_text(encoding="utf-8"))
        size = tflite.stat().st_size
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(manifest, dict) and manifest.get("size_bytes", size) == size


def manifest_labels(tflite: Path) -> tuple[str, ...] | None:
    """The class names an edgemodels manifest beside `tflite` records (None: no manifest, or not ours).

    Manifests written before labels were recorded are all of the 3-class polarity task."""
    from edgemodels import LABELS

    mf = Path(tflite).parent / "manifest.json"
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(manifest, dict):
        return None
    if isinstance(manifest.get("labels"), list) and len(manifest["labels"]) >= 2:
        return tuple(str(x) for x in manifest["labels"])
    return tuple(LABELS) if "quant" in manifest and "max_length" in manifest else None


# ----------------------------------------------------------------------------------------------
# A tflite: source opened for the bench


AS_IS = "as-is"
"""The mode a tflite: source's row carries when nothing says how its file was made (no edgemodels manifest beside
it). Not a registry mode: nothing builds it, so it has no tolerances of its own; the suites skip what needs them."""


@dataclass
class ReadyTflite:
    """A ready .tflite as the bench uses it: the file itself (never built, never copied into the cache) and what
    feeding and reading it needs. `manifest` has the fields the suites read from a built artifact's manifest; its
    key digest is the file's sha256, so memoised results (accuracy) follow the file's content, not its path."""

    source: ModelSource
    tflite: Path
    tokenizer_dir: Path
    manifest: dict[str, Any]
    mode: str  # the edgemodels manifest's mode when one beside it describes this very file, else AS_IS
    seq: int | None  # the model's fixed input length, None for a dynamic-length model

    @property
    def size_bytes(self) -> int:
        return int(self.manifest["size_bytes"])

    @property
    def pretrained(self) -> bool | None:
        return self.manifest.get("pretrained")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.manifest["labels"])


def open_tflite(src: ModelSource, *, runtime_name: str | None = None, default_length: int = 128) -> ReadyTflite:
    """Read what a tflite: source is: its length from the model's input shape, its mode from an edgemodels manifest
    beside it (only if that manifest's size is this file's: a manifest left beside another file says nothing about
    it), its pad id from the manifest or the tokenizer. A file no runtime here loads is a SourceError."""
    from edgemodels.build import models, modes
    from edgemodels.run import runtime

    if src.kind != "tflite" or src.tokenizer is None or src.labels is None:
        raise SourceError(f"model {src}: not a parsed tflite: source (parse it with sources.parse)")
    path = Path(src.ref)
    try:
        fixed = runtime.load(path, runtime=runtime_name).fixed_length
    except runtime.ModelLoadError as exc:
        raise SourceError(f"model spec {src.spec!r}: no TFLite runtime here loads it: "
                          f"{' '.join(str(exc).split())[:200]}") from None
    size = path.stat().st_size
    try:
        beside = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        beside = None
    ours = isinstance(beside, dict) and beside.get("size_bytes") == size and beside.get("quant") in modes.MODES
    beside = beside if ours else {}
    pad = beside.get("pad_id")
    if pad is None:
        pad = models.pad_id(models.load_tokenizer(src.tokenizer))
    mode = str(beside["quant"]) if ours else AS_IS
    manifest = {
        "key": {"digest": sha256_file(path)}, "size_bytes": size, "quant": mode, "source": src.spec, "used_as_is": True,
        "max_length": int(fixed or beside.get("max_length") or default_length), "pad_id": int(pad),
        "labels": list(src.labels),
        # A user's shipped model is evaluated as what it is: the accuracy suite asserts it beats the majority class.
        "trained": bool(beside.get("trained", True)), "pretrained": beside.get("pretrained"),
        **{k: beside[k] for k in ("params", "weight_bytes", "model", "ops") if k in beside},
    }
    return ReadyTflite(src, path, src.tokenizer, manifest, mode, fixed)


# ----------------------------------------------------------------------------------------------
# Weights for dir: and hf: sources


def tf_model_types() -> Mapping[str, str]:
    """model_type -> the TF*ForSequenceClassification class transformers has for it."""
    from transformers.models.auto.modeling_tf_auto import TF_MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    return MappingProxyType(dict(TF_MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES))


def _torch_present() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _check_loadable(src: ModelSource, d: Path) -> dict[str, Any]:
    """The config, if transformers can build a TF classifier from it and read its weights here (every weights file
    opens: a truncated tf_model.h5 is one line naming it, not h5py's traceback at build time)."""
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    types = tf_model_types()
    if cfg.get("model_type") not in types:
        raise SourceError(
            f"model {src}: model_type {cfg.get('model_type')!r} has no TF*ForSequenceClassification class in "
            f"transformers (TensorFlow classes exist for: {', '.join(sorted(types))})")
    from edgemodels.build import models

    names = {p.name for p in models._weight_files(d)}
    if not names & {"model.safetensors", "tf_model.h5"} and not any(n.endswith(".safetensors") for n in names):
        if not _torch_present():
            raise SourceError(
                f"model {src}: {d} holds only PyTorch .bin weights, which need torch to convert; install torch "
                "(pip install torch) or re-save the model as safetensors (model.save_pretrained(DIR, "
                "safe_serialization=True))")
    models.check_weight_files(d)
    return cfg


def check(spec: str | ModelSource, **parse_kw: Any) -> ModelSource:
    """The parsed source, if it can be built (dir:, and hf: when its copy is in the local cache) or opened (tflite:)
    here; else one SourceError or WeightsError naming what to fix. `parse_kw`: as for `parse`.

    Why: a start-up check (the bench calls it before collecting tests), so a bad --models is one usage error, not
    one failure per test. It reads config.json and the weights files' headers; it imports transformers' table of
    TF classification classes, never TensorFlow, and never downloads."""
    from edgemodels.build import models

    src = parse(spec, **parse_kw)
    if src.kind == "dir":
        _check_loadable(src, Path(src.ref))
    elif src.kind == "hf" and models.hub_offline():
        d = _hub_snapshot(src, offline=True)
        check_model_dir(d, src.spec)
        _check_loadable(src, d)
    return src


def _hub_snapshot(src: ModelSource, *, offline: bool) -> Path:
    """The local snapshot directory of an hf: source (downloaded first unless offline)."""
    from huggingface_hub import snapshot_download

    from edgemodels.build import models

    try:
        return Path(snapshot_download(
            src.ref, allow_patterns=["config.json", "*.safetensors", "tf_model.h5", "pytorch_model.bin",
                                     *models.TOKENIZER_FILES],
            local_files_only=offline))
    except Exception as exc:  # noqa: BLE001 - hub errors are many; each becomes one line
        where = ("the Hugging Face cache (HF_HUB_OFFLINE=1: the hub is not tried; download it online once, "
                 f"e.g. `huggingface-cli download {src.ref}`)") if offline else "the Hugging Face hub"
        raise SourceError(f"model {src}: not found in {where}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160] if str(exc) else ''}") from None


def resolve(src: ModelSource, *, cache_root: Path, weights_dir: Path | None = None, offline: bool | None = None):
    """models.Weights for `src`: the registry's order for a registered name; the directory or hub otherwise."""
    from edgemodels.build import models

    if src.kind == "registered":
        return models.resolve(src.ref, cache_root=cache_root, weights_dir=weights_dir, offline=offline)
    if weights_dir is not None:
        raise SourceError(f"model {src}: --weights applies to a registered model; {src.kind}: names its own weights")
    if src.kind == "tflite":
        raise SourceError(f"model {src}: a tflite: source is used as it is and never built; evaluate, measure or "
                          "bench it, or build from a dir: or hf: source")
    if src.kind == "dir":
        d = Path(src.ref)
        check_model_dir(d, src.spec)
        ident = "dir:" + models._sha256_files([d / "config.json", *models._weight_files(d)])
        source = "dir"
    else:
        d = _hub_snapshot(src, offline=models.hub_offline() if offline is None else offline)
        check_model_dir(d, src.spec)
        ident = f"hf:{src.ref}@{d.name}"  # the snapshot directory is named by the hub revision (commit)
        source = "hf"
    cfg = _check_loadable(src, d)
    spec = models.ModelSpec(src.spec, src.ref if src.kind == "hf" else "", str(cfg["model_type"]),
                            MappingProxyType({}), description=f"user model from {src}")
    return models.Weights(spec, source, d, d, ident)


def max_positions(src: ModelSource) -> int | None:
    """Token positions the model can embed (None: unknown until resolved, e.g. an hf: source not cached)."""
    from edgemodels.build import models

    if src.kind == "registered":
        spec = models.get(src.ref)
        n = int(dict(spec.config).get("max_position_embeddings", 512))
        return n - 2 if spec.model_type in ("mpnet", "roberta", "xlm-roberta", "camembert") else n
    if src.kind == "dir":
        cfg = json.loads((Path(src.ref) / "config.json").read_text(encoding="utf-8"))
        n = cfg.get("max_position_embeddings")
        if not isinstance(n, int):
            return None
        return n - 2 if cfg.get("model_type") in ("mpnet", "roberta", "xlm-roberta", "camembert") else n
    return None
