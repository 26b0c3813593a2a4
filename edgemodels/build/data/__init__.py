"""Labelled text data sets: built-in finance tweets, RepLab 2013 (both 3-class polarity), or a user CSV/TSV
with any number (>= 2) of classes.

Why this module exists: every later stage (training, evaluation, caching, reports) needs the same
examples in the same order, an honest account of what was left out, and a content fingerprint to key
caches on. So every loader returns a `Dataset` whose examples carry provenance, whose `skipped`
counts every dropped row by reason, and whose `fingerprint` hashes texts, labels and split settings.

Specs (strings users type, e.g. in ``--data`` or ``$EDGEMODELS_DATA``):

* ``builtin`` -- the MIT-licensed Twitter Financial News Sentiment set shipped in the package.
* ``replab:DIR`` -- the official RepLab 2013 package (DIR contains ``training/`` and maybe ``test/``),
  or DIR pointing straight at a ``training`` or ``test`` folder. Tweet texts are never shipped.
* ``csv:FILE`` -- a .csv/.tsv with ``text`` and ``label`` columns (optional ``group`` column). Labels
  are class names (any names, read lower-cased; at least 2 classes); numeric labels are never mapped by
  position (the built-in set codes 1 = positive, other sets 1 = neutral), so they need an explicit
  mapping: ``csv:FILE?labels=0:negative,1:neutral,2:positive``.

Classes: ``builtin`` and ``replab:`` are the 3-class polarity task (`edgemodels.LABELS`); a ``csv:`` file's
classes are the class names in its rows, sorted (so the order of the classifier's outputs does not depend
on the order of the rows). Every `Dataset` carries its class names in ``labels``.

Splits: ``train``/``validation`` are a seeded stratified split of the training material (or, with
``group_split=True``, whole groups -- RepLab entities -- go to validation); ``test`` is the separate
official test material where it exists. An evaluation example (validation, test) whose exact text is also in
what the model learns from is dropped and counted (`DUPLICATE_SKIP`): repeated tweets would inflate accuracy.

The package, by concern: `spec` (DataSpec, parse_spec), `dataset` (Example, Dataset, fingerprints, sampling),
`csvfile` (strict CSV/TSV reading), `labelled` (the built-in set and csv: files with their label codings),
`replab` (the official RepLab 2013 layout), `splits` (load and the train/validation/test splits, duplicates dropped).
"""

from edgemodels.build.data.dataset import DataError, Dataset, Example
from edgemodels.build.data.spec import DATA_ENV, DataSpec, default_spec, parse_spec
from edgemodels.build.data.splits import (DUPLICATE_SKIP, SPLITS, check_loadable, classes, cross_split_duplicates,
                                          load, load_all)

__all__ = [
    "DATA_ENV",
    "DUPLICATE_SKIP",
    "SPLITS",
    "DataError",
    "DataSpec",
    "Dataset",
    "Example",
    "default_spec",
    "load",
    "check_loadable",
    "classes",
    "cross_split_duplicates",
    "load_all",
    "parse_spec",
]
