"""The prototype's classifier: VGG16 base behind the engine's input contract.

    image uint8 [N, H, W, 1] -> /255 -> grey x3 -> VGG16 conv base -> GAP
      -> Dense 256 relu -> Dropout -> Dense 1 sigmoid "probability" [N, 1]

The model that is trained is the model that is exported: augmentation runs
in tf.data (trainer.train), never as layers of this graph.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGENET_HELP = (
    "ImageNet weights cannot be downloaded here (no network). Put Keras' file "
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 in ~/.keras/models/ (copy it from a machine "
    "with network access), pass it with --weights PATH, or train from scratch with --weights none."
)
_IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Caffe-style BGR means of Keras' VGG16 ImageNet weights (pixel values 0..255).
_IMAGENET_MEAN = (103.939, 116.779, 123.68)


def build_model(size: int = 224, weights: str = "none", freeze_blocks: int = 0, dropout: float = 0.5,
                seed: int = 0):
    """Build the classifier.

    Args:
        size: input height and width.
        weights: ``none`` (He-initialised from scratch), ``imagenet`` (Keras'
            file, must already be on disk) or a path to VGG16 notop weights (.h5).
        freeze_blocks: VGG16 blocks 1..k kept frozen (0 = all trainable).
        dropout: dropout rate before the output layer.
        seed: initialisation seed.

    Returns:
        An uncompiled ``keras.Model`` named ``as_vgg16``.

    Raises:
        FileNotFoundError: ImageNet weights requested but not on disk (with the fix).
        ValueError: bad ``freeze_blocks`` or ``size``.
    """
    import keras
    from keras import layers

    if not 0 <= freeze_blocks <= 5:
        raise ValueError(f"freeze_blocks must be 0..5, got {freeze_blocks}")
    if size < 32:
        raise ValueError(f"size must be >= 32 (VGG16 pools 5 times), got {size}")
    keras.utils.set_random_seed(seed)
    pretrained = weights != "none"
    inp = keras.Input(shape=(size, size, 1), dtype="uint8", name="image")
    if pretrained:  # ImageNet VGG16 expects caffe preprocessing: 0..255 minus BGR means
        x = layers.Rescaling(1.0, name="scale")(inp)
        x = layers.Concatenate(axis=-1, name="to_rgb")([x, x, x])
        x = layers.Normalization(mean=list(_IMAGENET_MEAN), variance=[1.0, 1.0, 1.0], name="caffe")(x)
    else:
        x = layers.Rescaling(1.0 / 255.0, name="scale")(inp)
        x = layers.Concatenate(axis=-1, name="to_rgb")([x, x, x])
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
    if pretrained:
        base.load_weights(_weights_file(weights))
    else:
        _he_init(base, seed)
    freeze(base, freeze_blocks)
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(256, activation="relu", name="fc")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    out = layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model(inp, out, name="as_vgg16")


def freeze(base, blocks: int) -> None:
    """Freeze VGG16 blocks 1..``blocks``; unfreeze the rest."""
    for layer in base.layers:
        if layer.name.startswith("block"):
            layer.trainable = int(layer.name[5]) > blocks


def vgg_base(model):
    """The VGG16 sub-model inside ``model``."""
    return next(layer for layer in model.layers if layer.name == "vgg16")


def _he_init(base, seed: int) -> None:
    """He-normal convolution kernels, one seed per layer.

    Keras' default Glorot init with 13 ReLU convs and no batch norm shrinks
    the signal until the output sticks at 0.5 and nothing learns; a single
    seeded initializer reused across layers would give identical kernels.
    """
    import keras

    convs = [layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D)]
    for k, layer in enumerate(convs):
        layer.kernel.assign(keras.initializers.HeNormal(seed=seed * 100 + k)(layer.kernel.shape))


def _weights_file(weights: str) -> Path:
    if weights == "imagenet":
        path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / _IMAGENET_FILE
        if not path.exists():
            raise FileNotFoundError(IMAGENET_HELP)
        return path
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist. {IMAGENET_HELP}")
    return path
