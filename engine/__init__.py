"""asinfer engine: read MRI slices, preprocess them, and classify them with ONNX Runtime.

The whole public API::

    from asinfer import engine
    clf = engine.load()                       # shipped model, best provider
    for p in clf.predict(["series/", "slice.png"]):
        print(p.source, p.frame, p.probability, p.label, p.reason, p.message)

Research software trained on synthetic phantoms: not a diagnostic device.
Importing this package is cheap; OpenCV, pydicom and ONNX Runtime are
imported when first used, and TensorFlow never.

Modules with a public contract of their own: :mod:`asinfer.engine.bundle`
(manifest, artifacts, hashing, parity records and the one parity judge) and
:mod:`asinfer.engine.node` (``asinfer serve``, the DICOM node; the ``node``
extra, imported only when used).
"""

from ._bundle import default_model as default_model
from ._bundle import load as load
from ._classifier import Classifier as Classifier
from ._classifier import Explanation as Explanation
from ._classifier import Prediction as Prediction
from ._errors import REASONS as REASONS
from ._evidence import Head as Head
from ._evidence import grad_cam as grad_cam
from ._evidence import overlay as overlay
from ._errors import InputError as InputError
from ._errors import ModelError as ModelError
from ._formats import FORMATS as FORMATS
from ._formats import ModelFormat as ModelFormat
from ._formats import get_format as get_format
from ._formats import invalid_choice as invalid_choice
from ._io import MAX_PIXELS as MAX_PIXELS
from ._io import Frame as Frame
from ._io import iter_files as iter_files
from ._io import read_frames as read_frames
from ._io import sniff as sniff
from ._io import walk as walk
from ._preprocess import Preprocessor as Preprocessor
from ._preprocess import to_uint8 as to_uint8
from ._providers import PROVIDERS as PROVIDERS
from ._providers import SessionConfig as SessionConfig
from ._providers import available_providers as available_providers
from ._providers import create_session as create_session
from ._report import ReportFiles as ReportFiles
from ._report import write_report as write_report
from ._series import SeriesCollector as SeriesCollector
from ._series import SeriesResult as SeriesResult
from ._series import SeriesRule as SeriesRule
from ._series import SliceIdentity as SliceIdentity
from ._series import group_series as group_series
from ._slices import Slice as Slice
from ._slices import Source as Source
from ._slices import load_frames as load_frames
from ._slices import load_slices as load_slices
from ._version import __version__ as __version__
from .bundle import Artifact as Artifact
from .bundle import ArtifactCheck as ArtifactCheck
from .bundle import InputSpec as InputSpec
from .bundle import Manifest as Manifest
from .bundle import OutputSpec as OutputSpec
from .bundle import ParityRecord as ParityRecord
from .bundle import PreprocessSpec as PreprocessSpec
from .bundle import Tolerance as Tolerance
from .bundle import Verdict as Verdict
from .bundle import locate as locate
from .bundle import make_artifact as make_artifact
from .bundle import measure_parity as measure_parity
from .bundle import read_manifest as read_manifest
from .bundle import verify as verify
