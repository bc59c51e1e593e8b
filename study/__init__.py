"""The study's logic, by role.

- ``study.core``: data, models, the training loop, parameters, files (checkpoints, metrics JSON).
- ``study.compression``: the algorithms: constraint sets and projections, ADMM, progressive pruning,
  quantization, compaction of structured models.
- ``study.costs``: what a model costs: bit-exact encodings and storage, the energy model, measured latency.
- ``study.report``: tables, figures and the computed verdicts of the report.
- ``study.stages``: one entry point per DVC stage, ``run(...) -> StageResult``; the notebooks call these.
- ``study.contract``: the study's shared vocabulary: scheme names, bit widths, the tolerance rule, metrics keys.
"""
