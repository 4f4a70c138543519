"""medkd: retinal OCT B-scan classification distilled after KD-OCT, on the kdcore engine.

Front door (names load on first use; no torch until then):

    >>> from medkd import OCTRecipe, run_pipeline, OCTClassifier   # training, then prediction with an export
    >>> OCTRecipe().teacher.model
    'convnextv2_large.fcmae_ft_in22k_in1k'
"""

from kdcore.front_door import front_door as _front_door

# Public name -> the module that owns it (imported on first attribute access).
__all__, __getattr__, __dir__ = _front_door(__name__, {
    "run_pipeline": ".pipeline",
    "OCTClassifier": ".predictor",
    "OCTRecipe": ".config",
    "main": ".cli",
})
