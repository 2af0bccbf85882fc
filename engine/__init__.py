"""asinfer engine: read MRI slices, preprocess them, and classify them with ONNX Runtime.

The whole public API::

    from asinfer import engine
    clf = engine.load()                       # shipped model, best provider
    for p in clf.predict(["series/", "slice.png"]):
        print(p.source, p.frame, p.probability, p.label, p.error)

Research software trained on synthetic phantoms: not a diagnostic device.
Importing this package is cheap; OpenCV, pydicom and ONNX Runtime are
imported when first used, and TensorFlow never.
"""

from ._bundle import default_model as default_model
from ._bundle import load as load
from ._bundle import locate as locate
from ._bundle import make_artifact as make_artifact
from ._bundle import verify as verify
from ._classifier import Classifier as Classifier
from ._classifier import Prediction as Prediction
from ._errors import REASONS as REASONS
from ._errors import InputError as InputError
from ._errors import ModelError as ModelError
from ._formats import FORMATS as FORMATS
from ._formats import ModelFormat as ModelFormat
from ._io import Frame as Frame
from ._io import read_frames as read_frames
from ._manifest import METADATA_KEY as METADATA_KEY
from ._manifest import Artifact as Artifact
from ._manifest import InputSpec as InputSpec
from ._manifest import Manifest as Manifest
from ._manifest import PreprocessSpec as PreprocessSpec
from ._preprocess import Preprocessor as Preprocessor
from ._preprocess import to_uint8 as to_uint8
from ._providers import PROVIDERS as PROVIDERS
from ._providers import available as available_providers
from ._version import __version__ as __version__
