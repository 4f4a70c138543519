"""Synthetic faces with 68-point iBUG landmarks, so the facekd demo runs on a fresh clone without a dataset.

A statistical 68-point shape model (``shape``) is posed and drawn with OpenCV (``face``, ``scene``) into images
whose landmarks lie on the drawn features (``render``); ``write_synthetic_faces`` writes a 300-W-like folder.

Example:
    >>> import tempfile
    >>> summary = write_synthetic_faces(tempfile.mkdtemp(), n_faces=2, image_size=(64, 64))
    >>> summary["images"]
    ['s0000_00.png', 's0000_01.png']
"""

from facekd.synth.appearance import Appearance
from facekd.synth.render import Difficulty, FaceParams, render_face, sample_face_params, sample_subject
from facekd.synth.shape import Expression, Identity, Pose
from facekd.synth.writer import GENERATOR_VERSION, is_synthetic_output, subject_params, write_synthetic_faces

__all__ = ["write_synthetic_faces", "is_synthetic_output", "subject_params", "GENERATOR_VERSION", "render_face",
           "sample_subject", "sample_face_params", "Difficulty", "FaceParams", "Identity", "Appearance",
           "Expression", "Pose"]
