"""Where a bench run's artifacts come from, decided once at configure time: built through the cache (with any ready
.tflite the user named, used as it is), or read from an export made on a workstation (a device with no TensorFlow).

Both answer the same questions (which cases, each case's file and manifest, tokenized feeds and labels of the
evaluation sample, accuracy through a runtime, the x86 reference outputs an export carries), so the session and the
suites never ask which source they have.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import cached_property
from typing import Any, Callable, Mapping

import numpy as np

from edgemodels.study import matrix
from edgemodels.study.matrix import Case, Scale

SOURCE_PREFIXES = ("dir:", "hf:", "tflite:")
"""--models entries that name a model source rather than a registry model."""


class NotConverted(Exception):
    """The case's model does not convert to TFLite builtins (the converter's error, or what the export recorded)."""


class BuiltArtifacts:
    """Artifacts built lazily through the package's pipeline and cached; `ready` files are used as they are."""

    kind = "built"
    holds_references = False  # x86 outputs for the compat check come from running the file here

    def __init__(self, store, scale: Scale, data_spec: str, max_examples: int | None = None,
                 ready: Mapping[str, Any] | None = None, named_sources: Mapping[str, str] | None = None):
        from edgemodels.build import data

        self.store, self.scale, self.data_spec, self.max_examples = store, scale, data_spec, max_examples
        self.ready = dict(ready or {})  # --models tflite: entry -> sources.ReadyTflite
        self.named_sources = dict(named_sources or {})  # a conftest.py's name -> spec
        self.data_kind = data.parse_spec(data_spec).kind
        self.compat_examples = scale.emulation_examples

    def header(self) -> str:
        return f"cache={self.store.root}"

    @property
    def fingerprint(self) -> str:
        """The evaluation sample's fingerprint (what the accuracy figures were measured on)."""
        return self.eval_set.fingerprint

    def summary(self) -> dict | None:
        return None

    # -- the matrix ---------------------------------------------------------------------------------------------
    def cases(self, keep_models: set[str], keep_modes: set[str]) -> tuple[Case, ...]:
        built = tuple(c for c in self.scale.cases
                      if (not keep_models or c.model in keep_models) and (not keep_modes or c.quant in keep_modes))
        return built + self._source_cases(keep_models, keep_modes)

    def _source_cases(self, keep_models: set[str], keep_modes: set[str]) -> tuple[Case, ...]:
        """The user's models (dir:/hf:/a conftest.py name): each asked mode (default fp32 and drq) at the scale's
        usual fixed length; a ready .tflite is one case, in the mode it was made in (or "as-is"), at its own length."""
        specs = [self.named_sources.get(m, m) for m in sorted(keep_models)
                 if (m.startswith(SOURCE_PREFIXES) or m in self.named_sources) and m not in self.ready]
        files = tuple(Case(r.source.spec, r.mode, r.seq) for r in self.ready.values())
        if not specs:
            return files
        seqs = [c.seq for c in self.scale.cases if c.seq is not None]
        seq = max(set(seqs), key=seqs.count) if seqs else 128
        modes = [m for m in matrix.ALL_MODES if m in keep_modes] if keep_modes else ["fp32", "drq"]
        return tuple(Case(spec, q, seq) for spec in specs for q in modes) + files

    def ready_file(self, case: Case):
        return next((r for r in self.ready.values() if r.source.spec == case.model), None)

    # -- artifacts ----------------------------------------------------------------------------------------------
    def request(self, case: Case):
        from edgemodels.build import pipeline

        return pipeline.request_for(case, self.scale, self.data_spec, self.max_examples)

    def artifact(self, case: Case):
        ready = self.ready_file(case)
        if ready is not None:
            return ready
        from edgemodels.build import pipeline
        from edgemodels.build.convert import ConversionError

        try:
            return pipeline.build(self.request(case), self.store)
        except ConversionError as exc:
            raise NotConverted(" ".join(str(exc).split())[:200]) from exc

    def checkpoint_bytes(self, large: Case) -> int:
        from edgemodels.build import pipeline

        return pipeline.training_checkpoint(self.request(large), self.store).manifest["size_bytes"]

    # -- evaluation data ----------------------------------------------------------------------------------------
    @cached_property
    def eval_set(self):
        from edgemodels.run import evaluate

        return evaluate.evaluation_set(self.data_spec, self.scale.eval_examples)  # the sample an export holds

    def _sample(self, n: int | None):
        return self.eval_set if n is None else self.eval_set.sample(min(n, len(self.eval_set.examples)))

    def feeds(self, case: Case, n: int | None = None) -> list[dict]:
        """Real tweets of the evaluation split, encoded for the artifact (padded, or at their own length)."""
        from edgemodels.build import convert
        from edgemodels.run import evaluate

        art = self.artifact(case)
        ids = evaluate.encode_dataset(self._sample(n), art.tokenizer_dir, case.seq or art.manifest["max_length"])
        return [convert.to_feeds(x, case.seq, art.manifest["pad_id"]) for x in ids]

    def labels(self, case: Case, n: int | None = None) -> np.ndarray:
        return self._sample(n).label_ids()

    def reference(self, case: Case) -> tuple[np.ndarray | None, str | None, str | None]:
        """(x86 outputs on the compat feeds, what they are, the arch they came from): none is carried here."""
        return None, None, None

    # -- accuracy -----------------------------------------------------------------------------------------------
    def accuracy(self, case: Case, runtime: str, version: str, before: Callable[[], None]):
        """Accuracy through `runtime` on the evaluation sample, memoised in the cache by the file's digest, the
        sample's fingerprint, the runtime and the deciding code; `before` runs only when it must be computed."""
        from edgemodels.run import evaluate
        from edgemodels.store.cache import Key
        from edgemodels.store.keys import ACCURACY_CODE, code_identity

        art = self.artifact(case)
        key = Key("accuracy", case.id, {"artifact": art.manifest["key"]["digest"], "data": self.eval_set.fingerprint,
                                        "runtime": [runtime, version], "code": code_identity(*ACCURACY_CODE)})

        def compute() -> dict:
            before()
            acc = evaluate.evaluate(art.tflite, self.eval_set, tokenizer_dir=art.tokenizer_dir,
                                    max_length=art.manifest["max_length"], pad=art.manifest["pad_id"],
                                    labels=art.manifest.get("labels"), runtime_name=runtime)
            return asdict(acc)  # every host core: predictions do not depend on thread or process counts

        result, _ = self.store.memo_json(key, compute)
        result["confusion"] = tuple(tuple(r) for r in result["confusion"])
        return evaluate.Accuracy(**result)

    def evaluation(self, case: Case, runtime: str, n: int) -> tuple[Callable[[], Any], int, str]:
        """(a call that evaluates `n` tweets of the split end to end, the count it must report, what they are)."""
        from edgemodels.run import evaluate

        art, ds = self.artifact(case), self._sample(n)
        return (lambda: evaluate.evaluate(art.tflite, ds, tokenizer_dir=art.tokenizer_dir,
                                          max_length=art.manifest["max_length"], pad=art.manifest["pad_id"],
                                          runtime_name=runtime, quiet=True, labels=art.manifest.get("labels")),
                len(ds.examples), "tweets of the evaluation split")


class ExportedArtifacts:
    """An export directory (python -m edgemodels export): nothing is built, tokenized or fetched."""

    kind = "export"
    holds_references = True  # the export carries its build host's outputs on the compat sample
    store = None  # nothing is built or memoised on the device

    def __init__(self, export):
        self.export = export
        self.data_spec, self.data_kind = export.data_spec, export.data_kind
        self.max_examples, self.compat_examples = export.max_examples, export.compat_n

    @property
    def fingerprint(self) -> str | None:
        return (self.export.index.get("data") or {}).get("fingerprint")

    def header(self) -> str:
        e = self.export
        return f"artifacts={e.root} (exported on {e.built_on}, {e.index['created']})"

    def summary(self) -> dict | None:
        return self.export.summary()

    def cases(self, keep_models: set[str], keep_modes: set[str]) -> tuple[Case, ...]:
        held = set(self.export.case_ids())
        scale = matrix.get_scale(self.export.scale)
        return tuple(c for c in scale.cases if c.id in held
                     and (not keep_models or c.model in keep_models) and (not keep_modes or c.quant in keep_modes))

    def ready_file(self, case: Case):
        return None

    def artifact(self, case: Case):
        failed = self.export.conversion_failure(case.id)
        if failed:
            raise NotConverted(failed)
        return self.export.artifact(case.id)

    def checkpoint_bytes(self, large: Case) -> int | None:
        return self.export.checkpoint_bytes(large.model)

    def feeds(self, case: Case, n: int | None = None) -> list[dict]:
        self.artifact(case)  # verified before use
        return self.export.feeds(case.id, n)

    def labels(self, case: Case, n: int | None = None) -> np.ndarray:
        return self.export.labels(case.id, n)

    def reference(self, case: Case) -> tuple[np.ndarray | None, str | None, str | None]:
        return (self.export.reference_outputs(case.id), self.export.reference_label,
                self.export.index["built_on"]["arch"])

    def accuracy(self, case: Case, runtime: str, version: str, before: Callable[[], None]):
        before()  # the device has no build cache to memoise in; the exported ids are the tokenizer's, verbatim
        return self.export.accuracy(case.id, runtime_name=runtime)

    def evaluation(self, case: Case, runtime: str, n: int) -> tuple[Callable[[], Any], int, str]:
        return (lambda: self.export.accuracy(case.id, runtime_name=runtime), self.export.n_eval,
                "pre-tokenized tweets of the exported evaluation split")
