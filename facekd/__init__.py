"""facekd: facial landmark regression distilled with Fard & Mahoor's KD-Loss, on the kdcore engine.

The names a user starts from are importable from here; they are loaded on first use, so ``import facekd`` stays
cheap (no torch until one of them is touched).

Example:
    >>> import facekd
    >>> sorted(facekd.__all__)
    ['FaceRecipe', 'LandmarkDetector', '__version__', 'main', 'run_pipeline']
    >>> from facekd import LandmarkDetector, run_pipeline
"""

from kdcore.front_door import front_door as _front_door

# Public name -> the module that owns it (imported on first attribute access).
__all__, __getattr__, __dir__ = _front_door(__name__, {
    "run_pipeline": ".pipeline",
    "LandmarkDetector": ".predictor",
    "FaceRecipe": ".config",
    "main": ".cli",
})
