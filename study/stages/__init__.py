"""One entry point per DVC stage: ``run(params, layout, ...) -> StageResult``; the notebooks call these.

``launch`` turns a DVC stage name into its notebook run (``python -m study.stages.launch <stage>``).
"""
