"""medkd: retinal OCT B-scan classification distilled after KD-OCT, on the kdcore engine."""

__version__ = "0.1.0"
