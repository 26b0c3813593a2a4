"""edgemodels.build.prune: the vocabulary pruned to the training split's pieces, embedding rows and tokenizer together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_SEQ
from edgemodels.build import convert, models, prune
from edgemodels.run import runtime


def _wordpiece(tokens: list[str]) -> dict:
    return {"added_tokens": [{"id": 0, "content": "[PAD]", "special": True}, {"id": 1, "content": "[UNK]",
                                                                             "special": True},
                             {"id": 2, "content": "[CLS]", "special": True}, {"id": 3, "content": "[SEP]",
                                                                             "special": True}],
            "post_processor": {"type": "TemplateProcessing", "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
            "padding": {"pad_id": 0},
            "model": {"type": "WordPiece", "unk_token": "[UNK]",
                      "vocab": {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *tokens])}}}


def test_tokenizer_json_remap_is_consistent():
    tj = _wordpiece(["a", "b", "c", "d"])
    assert prune.special_ids(tj) == {0, 1, 2, 3}
    out = prune.prune_tokenizer_json(tj, [0, 1, 2, 3, 5, 7])  # keep "b" and "d"
    assert out["model"]["vocab"] == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "b": 4, "d": 5}
    assert out["post_processor"]["special_tokens"]["[SEP]"]["ids"] == [3]
    assert tj["model"]["vocab"]["d"] == 7  # the input is not modified
    bpe = {**tj, "model": {"type": "BPE", "vocab": {}, "merges": []}}
    with pytest.raises(prune.PruneError, match="only WordPiece"):
        prune.prune_tokenizer_json(bpe, [0, 1])


def test_the_tokenizers_own_unknown_token_is_kept_and_counted():
    """Not every vocabulary spells it '[UNK]': the tokenizer.json's own unk_token is the one kept and counted."""
    tj = _wordpiece(["a", "<unk>"])
    tj["model"]["unk_token"] = "<unk>"
    assert prune.unk_token(tj) == "<unk>" and prune.special_ids(tj) == {0, 1, 2, 3, 5}
    assert prune.unk_token({"model": {"type": "BPE", "vocab": {}}}) is None
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models

    tok = Tokenizer(tok_models.WordPiece({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    encoded = [tok.encode(t).ids for t in ("a zebra b", "b a", "zebra zebra")]
    assert encoded[0] == [1, 0, 2] and prune.unk_count(tok, encoded) == 3


def test_pruned_stage_keeps_training_pieces_and_the_same_logits(tiny):
    """A text whose pieces were all kept gets the same logits from the pruned model and tokenizer."""
    full, pruned = tiny.artifact("fp32"), tiny.artifact("pruned-fp32")
    vocab = pruned.manifest["vocab"]
    assert vocab["vocab_original"] == 30522 and 5 < vocab["vocab_kept"] < 200  # ~30 words + item ids + specials
    assert vocab["embedding_bytes_saved"] == 4 * (30522 - vocab["vocab_kept"]) * vocab["embedding_dim"]
    assert 0 <= vocab["eval_unk_fraction"] <= vocab["eval_unseen_fraction"] < 0.5
    assert pruned.manifest["params"] < full.manifest["params"]
    assert full.size_bytes - pruned.size_bytes == pytest.approx(vocab["embedding_bytes_saved"], rel=0.01)
    tok_full, tok_pruned = models.load_tokenizer(full.tokenizer_dir), models.load_tokenizer(pruned.tokenizer_dir)
    assert tok_pruned.get_vocab_size() == vocab["vocab_kept"]
    text = "great profit growth terrible report meeting item"  # each used >= 5 times in the training split
    [a], [b] = models.encode(tok_full, [text], TINY_SEQ), models.encode(tok_pruned, [text], TINY_SEQ)
    assert a != b and len(a) == len(b)  # renumbered, same segmentation
    assert [tok_full.id_to_token(i) for i in a] == [tok_pruned.id_to_token(i) for i in b]
    ref = runtime.load(full.tflite).run(convert.to_feeds(a, TINY_SEQ, full.manifest["pad_id"]))
    out = runtime.load(pruned.tflite).run(convert.to_feeds(b, TINY_SEQ, pruned.manifest["pad_id"]))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    # A word the training split never used: kept pieces where WordPiece finds them, else [UNK].
    [c] = models.encode(tok_pruned, ["zebra"], TINY_SEQ)
    assert tok_pruned.token_to_id("zebra") is None  # not kept: the case under test
    specials = {tok_pruned.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")} | {pruned.manifest["pad_id"]}
    pieces = [tok_pruned.id_to_token(i) for i in c if i not in specials]
    assert "[UNK]" in pieces or "".join(p.removeprefix("##") for p in pieces) == "zebra", pieces
    cfg = json.loads((pruned.tokenizer_dir / "tokenizer.json").read_text())
    assert len(cfg["model"]["vocab"]) == vocab["vocab_kept"]


def test_pruned_w4_composes_both(tiny):
    art, w4 = tiny.artifact("pruned-w4"), tiny.artifact("w4")
    assert art.manifest["vocab"]["vocab_kept"] < 200 and art.size_bytes < w4.size_bytes / 10
    assert art.manifest["key"]["parts"]["source"] == tiny.artifact("pruned-fp32").manifest["key"]["digest"]
