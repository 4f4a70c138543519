"""facekd: facial landmark regression distilled with Fard & Mahoor's KD-Loss, on the kdcore engine.

``run_pipeline``, ``FaceRecipe``, ``LandmarkDetector`` and ``main`` are importable from here and load when first
touched, e.g. ``facekd.LandmarkDetector.load("exports/300w").predict("photo.jpg")``.
"""

from kdcore.front_door import front_door as _front_door

# Public name -> the module that owns it (imported on first attribute access).
__all__, __getattr__, __dir__ = _front_door(__name__, {
    "run_pipeline": ".pipeline",
    "LandmarkDetector": ".predictor",
    "FaceRecipe": ".config",
    "main": ".cli",
})
