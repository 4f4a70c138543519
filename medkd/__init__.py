"""medkd: retinal OCT B-scan classification distilled after KD-OCT, on the kdcore engine.

The names a user starts from are importable from here; they are loaded on first use, so ``import medkd`` stays
cheap (no torch until one of them is touched).

Example:
    >>> import medkd
    >>> sorted(medkd.__all__)
    ['OCTClassifier', 'OCTRecipe', '__version__', 'main', 'run_pipeline']
    >>> from medkd import OCTClassifier, run_pipeline
"""

from kdcore.front_door import front_door as _front_door

# Public name -> the module that owns it (imported on first attribute access).
__all__, __getattr__, __dir__ = _front_door(__name__, {
    "run_pipeline": ".pipeline",
    "OCTClassifier": ".predictor",
    "OCTRecipe": ".config",
    "main": ".cli",
})
