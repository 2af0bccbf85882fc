"""Mirror-tied weights: a VGG16 whose output cannot change under a left-right mirror.

Each convolution's output channels come in pairs: channel ``j + C/2`` is channel ``j``
computed with the kernel mirrored left-right (and, after the first layer, reading the
input pairs the other way round). Mirroring the image then mirrors every feature map and
swaps the halves of its channels; max pools of even-width maps, ReLU and batch norm tied
the same way keep that, global average pooling removes the mirror, and a first dense layer
whose rows for ``j`` and ``j + C/2`` are equal removes the swap. So the probability of an
image and of its mirror are the same number, by construction and in one pass: test-time
mirroring gives the same at twice the work (issue 13: untied, 5-21 % of the labels changed
under a mirror although training flipped half the images).

The tie is a Keras constraint (the optimiser projects each step back onto tied weights)
and :func:`tie_statistics` for batch norm's moving statistics, which no optimiser touches.
The trained model is a plain VGG16-BN: the engine and the converter see nothing new.
"""

from __future__ import annotations

import keras
from keras import ops

from .model import all_layers


@keras.saving.register_keras_serializable(package="asinfer")
class MirrorTie(keras.constraints.Constraint):
    """Project a weight onto the mirror-tied ones: ``(w + mirror(w)) / 2``.

    ``mirror`` flips ``flip_axis`` (a kernel's width) and swaps the two halves of each of
    ``swap_axes`` (channel pairs). Applied twice it is the identity, so the projection keeps
    tied weights as they are.
    """

    def __init__(self, flip_axis: int | None = None, swap_axes: tuple[int, ...] = ()) -> None:
        self.flip_axis = flip_axis
        self.swap_axes = tuple(swap_axes)

    def __call__(self, w):
        return (w + self.mirror(w)) / 2

    def mirror(self, w):
        if self.flip_axis is not None:
            w = ops.flip(w, axis=self.flip_axis)
        for axis in self.swap_axes:
            w = ops.roll(w, shift=w.shape[axis] // 2, axis=axis)
        return w

    def get_config(self) -> dict:
        return {"flip_axis": self.flip_axis, "swap_axes": list(self.swap_axes)}


def conv_tie(first: bool) -> MirrorTie:
    """The tie of a [kh, kw, in, out] kernel; the first layer reads grey (no input pairs)."""
    return MirrorTie(flip_axis=1, swap_axes=(3,) if first else (2, 3))


def channel_tie() -> MirrorTie:
    """The tie of a per-channel vector (batch norm) or of a dense kernel's input rows."""
    return MirrorTie(swap_axes=(0,))


def tie_initial(model) -> None:
    """Project freshly initialised weights onto the tied ones, keeping their scale.

    Every entry is averaged with a different, independent one, which divides the standard
    deviation by sqrt(2); multiplying back keeps He and Glorot's scale.
    """
    for variable in _tied(model):
        if "kernel" in variable.path:
            variable.assign(variable.constraint(variable) * 2 ** 0.5)


def tie_statistics(model) -> None:
    """Average batch norm's moving mean and variance over each channel pair.

    The training batches are mirrored at random, so both channels of a pair estimate the
    same statistic; their mean is the better estimate, and the one that keeps the model
    exactly mirror-invariant at inference. Idempotent.
    """
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and isinstance(layer.gamma_constraint, MirrorTie):
            for stat in (layer.moving_mean, layer.moving_variance):
                stat.assign(layer.gamma_constraint(stat))


class TieStatistics(keras.callbacks.Callback):
    """Tie the moving statistics before each validation, so that what is validated and
    checkpointed is the invariant model."""

    def on_test_begin(self, logs=None):
        tie_statistics(self.model)

    def on_train_end(self, logs=None):
        tie_statistics(self.model)


def _tied(model):
    for layer in all_layers(model):
        if hasattr(layer, "layers"):  # a sub-model: its layers come on their own
            continue
        for variable in layer.weights:
            if isinstance(getattr(variable, "constraint", None), MirrorTie):
                yield variable
