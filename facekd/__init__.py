"""facekd: facial landmark regression distilled with Fard & Mahoor's KD-Loss, on the kdcore engine."""

__version__ = "0.1.0"
