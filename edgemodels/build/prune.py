"""Vocabulary pruning: keep the word pieces the training split uses, drop the other embedding rows.

Why: a 30,522-row WordPiece table is about half of MiniLM-L6's weights, and a classifier fine-tuned on one
domain reads a few thousand of those rows. Pruning is a pipeline stage between fine-tuning and conversion
(cache kind `pruned`, keyed on the fine-tuned entry, the training split and the frequency floor `min_count` of the
mode, edgemodels.build.modes.PRUNE_MIN_COUNT): the word-embedding rows and the
tokenizer are remapped together (kept pieces in their original order, special tokens always kept), so a text
whose pieces were all kept gets exactly the same ids-up-to-renumbering and the same logits.

Unseen text: WordPiece segments a word greedily with the pieces it has; with fewer pieces a word unseen in
training splits into kept pieces where it can and falls to [UNK] where it cannot. Both figures are reported:
`eval_unseen_fraction` (evaluation tokens, under the original tokenizer, not kept: what an id remap would send
to [UNK]) and `eval_unk_fraction` (tokens that are [UNK] under the pruned tokenizer). Only WordPiece
vocabularies are pruned (BERT, MiniLM, MobileBERT, MPNet); BPE/Unigram merges would need rewriting too.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from edgemodels.errors import EdgeModelsError


class PruneError(EdgeModelsError, ValueError):
    pass


@dataclass(frozen=True)
class VocabStats:
    vocab_original: int
    vocab_kept: int
    embedding_dim: int
    embedding_bytes_saved: int  # fp32 bytes of the dropped rows (4 x rows x dim), before any quantization
    eval_split: str
    eval_tokens: int  # non-special tokens of the evaluation split, original tokenizer, truncated as the model sees
    eval_unseen_fraction: float  # of those, pieces not kept
    eval_unk_fraction: float  # [UNK] share under the pruned tokenizer (minus the original tokenizer's own [UNK]s)


def unk_token(tok_json: dict[str, Any]) -> str | None:
    """The tokenizer's own unknown token ('[UNK]' for BERT's WordPiece, '<unk>' elsewhere), from tokenizer.json."""
    return tok_json.get("model", {}).get("unk_token")


def unk_count(tokenizer, encoded: Iterable[Iterable[int]]) -> int:
    """How many of the encoded ids are the tokenizer's own unknown token (0 for a tokenizer without one)."""
    unk = unk_token(json.loads(tokenizer.to_str()))
    unk_id = tokenizer.token_to_id(unk) if unk else None
    return 0 if unk_id is None else sum(1 for ids in encoded for i in ids if i == unk_id)


def special_ids(tok_json: dict[str, Any]) -> set[int]:
    """Added/special tokens and the unknown token: always kept."""
    out = {int(t["id"]) for t in tok_json.get("added_tokens") or ()}
    unk = unk_token(tok_json)
    vocab = tok_json.get("model", {}).get("vocab") or {}
    if isinstance(vocab, dict) and unk in vocab:
        out.add(int(vocab[unk]))
    return out


def kept_ids(tokenizer, texts: Iterable[str], min_count: int = 1) -> list[int]:
    """Sorted ids the texts use at least `min_count` times (untruncated), plus every special id."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    counts: Counter[int] = Counter()
    for enc in tokenizer.encode_batch(list(texts)):
        counts.update(enc.ids)
    tok_json = json.loads(tokenizer.to_str())
    return sorted({i for i, n in counts.items() if n >= min_count} | special_ids(tok_json))


def _remap_processor(node: Any, new_id: dict[int, int]) -> Any:
    """Special-token ids inside a post-processor (TemplateProcessing, BertProcessing, RobertaProcessing, Sequence)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "ids" and isinstance(v, list):
                out[k] = [new_id[int(i)] for i in v]
            elif k in ("sep", "cls") and isinstance(v, list) and len(v) == 2 and isinstance(v[1], int):
                out[k] = [v[0], new_id[v[1]]]
            else:
                out[k] = _remap_processor(v, new_id)
        return out
    if isinstance(node, list):
        return [_remap_processor(x, new_id) for x in node]
    return node


def prune_tokenizer_json(tok_json: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    """The tokenizer.json whose vocabulary is `keep` (old ids, ascending), renumbered 0..len(keep)-1."""
    model = tok_json.get("model", {})
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise PruneError(f"tokenizer model {model.get('type')!r}: only WordPiece vocabularies can be pruned "
                         "(BERT, MiniLM, MobileBERT, MPNet); use a mode without pruning for this model")
    new_id = {old: new for new, old in enumerate(keep)}
    by_id = {int(i): t for t, i in model["vocab"].items()}
    out = json.loads(json.dumps(tok_json))
    out["model"]["vocab"] = {by_id[old]: new for old, new in new_id.items()}
    for t in out.get("added_tokens") or ():
        t["id"] = new_id[int(t["id"])]
    if out.get("post_processor"):
        out["post_processor"] = _remap_processor(out["post_processor"], new_id)
    if out.get("padding") and "pad_id" in out["padding"]:
        out["padding"]["pad_id"] = new_id[int(out["padding"]["pad_id"])]
    return out


def prune_tokenizer_dir(src: Path, dst: Path, keep: list[int]) -> None:
    """A tokenizer directory (tokenizer.json, vocab.txt, configs) for the kept pieces."""
    from edgemodels.build import models

    tok_json = prune_tokenizer_json(json.loads(models.load_tokenizer(src).to_str()), keep)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False), encoding="utf-8")
    vocab = sorted(tok_json["model"]["vocab"].items(), key=lambda kv: kv[1])
    (dst / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in vocab), encoding="utf-8")
    new_id = {old: new for new, old in enumerate(keep)}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if not (src / name).is_file():
            continue
        if name == "tokenizer_config.json":
            cfg = json.loads((src / name).read_text(encoding="utf-8"))
            if isinstance(cfg.get("added_tokens_decoder"), dict):
                cfg["added_tokens_decoder"] = {str(new_id[int(k)]): v for k, v in cfg["added_tokens_decoder"].items()
                                               if int(k) in new_id}
            (dst / name).write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        else:
            shutil.copy2(src / name, dst / name)


def prune_model(weights_dir: Path, out_dir: Path, keep: list[int], pad_id: int | None) -> tuple[int, int]:
    """Save the classifier with only the `keep` rows of its word-embedding table; (params, embedding dim)."""
    import numpy as np
    from transformers import TFAutoModelForSequenceClassification

    from edgemodels.build import models

    model = TFAutoModelForSequenceClassification.from_pretrained(str(weights_dir))
    table = model.get_input_embeddings().weight
    old = table.numpy()
    if max(keep) >= old.shape[0]:
        raise PruneError(f"{weights_dir}: tokenizer id {max(keep)} beyond the {old.shape[0]}-row embedding table")
    config = model.config
    config.vocab_size = len(keep)
    if pad_id is not None:
        config.pad_token_id = pad_id
    new = TFAutoModelForSequenceClassification.from_config(config)
    new(new.dummy_inputs, training=False)
    if len(new.weights) != len(model.weights):
        raise PruneError(f"{weights_dir}: the pruned model has {len(new.weights)} weights, the original "
                         f"{len(model.weights)}")
    new_table = new.get_input_embeddings().weight
    for a, b in zip(model.weights, new.weights):
        if a is table:
            if b is not new_table:
                raise PruneError(f"{weights_dir}: weight order differs between original and pruned model")
            b.assign(old[np.asarray(keep)])
        elif tuple(a.shape) != tuple(b.shape):
            raise PruneError(f"{weights_dir}: {a.name} {tuple(a.shape)} vs {b.name} {tuple(b.shape)}")
        else:
            b.assign(a)
    new.save_pretrained(str(out_dir))
    return models.count_params(new), int(old.shape[1])


def pruned(req, base, store, min_count: int):
    """The cached `pruned` stage: base's fine-tuned weights and tokenizer with the pieces the training split uses
    at least `min_count` times (and the special tokens)."""
    from edgemodels.store import cache as cache_mod
    from edgemodels.build import data, models
    from edgemodels.build.pipeline import TOKENIZER_DIR, library_versions

    kw = dict(seed=req.train.seed, val_fraction=req.val_fraction, group_split=req.group_split)
    train_set = data.load(req.data, "train", **kw)
    eval_split = data.parse_spec(req.data).evaluation_split
    eval_set = data.load(req.data, eval_split, **kw)
    key = cache_mod.Key("pruned", req.source.slug, {
        "trained": base.manifest["key"]["digest"], "data": train_set.fingerprint, "eval": eval_set.fingerprint,
        "min_count": min_count, "libs": library_versions()})

    def build(tmp: Path) -> dict[str, Any]:
        tok = models.load_tokenizer(base.file(TOKENIZER_DIR))
        keep = kept_ids(tok, train_set.texts(), min_count)
        prune_tokenizer_dir(base.file(TOKENIZER_DIR), tmp / TOKENIZER_DIR, keep)
        new_tok = models.load_tokenizer(tmp / TOKENIZER_DIR)
        params, dim = prune_model(base.file("weights"), tmp / "weights", keep, models.pad_id(new_tok))
        tok_json = json.loads(tok.to_str())
        vocab_original = tok_json["model"]["vocab"]
        max_len = req.seq or req.train.max_length
        specials_old = special_ids(tok_json)
        before = models.encode(tok, eval_set.texts(), max_len)
        after = models.encode(new_tok, eval_set.texts(), max_len)
        kept = set(keep)
        n_tokens = sum(1 for x in before for i in x if i not in specials_old)
        unseen = sum(1 for x in before for i in x if i not in specials_old and i not in kept)
        unk_before, unk_after = unk_count(tok, before), unk_count(new_tok, after)  # pruning keeps the unk token
        stats = VocabStats(
            vocab_original=len(vocab_original), vocab_kept=len(keep), embedding_dim=dim,
            embedding_bytes_saved=4 * (len(vocab_original) - len(keep)) * dim, eval_split=eval_split,
            eval_tokens=n_tokens, eval_unseen_fraction=unseen / max(1, n_tokens),
            eval_unk_fraction=max(0, unk_after - unk_before) / max(1, n_tokens))
        keep_fields = {k: v for k, v in base.manifest.items() if k not in ("key", "files", "created", "params")}
        return {**keep_fields, "params": params, "vocab": asdict(stats), "pruned_from": str(base.path),
                "min_count": min_count}

    return store.get_or_build(key, build)
