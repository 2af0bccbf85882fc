"""The prototype's classifier: VGG16 base behind the engine's input contract.

    image uint8 [N, H, W, 1] -> /255 -> grey x3 -> VGG16 conv base -> GAP
      -> Dense 256 relu -> Dropout -> Dense 1 sigmoid "probability" [N, 1]

With ``mirror_tied`` the weights are tied so that the output is the same for an
image and its left-right mirror (:mod:`asinfer.trainer.mirror`), and the GAP
reads block 5's map before its pool.

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
                seed: int = 0, batch_norm: bool | None = None, mirror_tied: bool = False):
    """Build the classifier.

    Args:
        size: input height and width.
        weights: ``none`` (He-initialised from scratch), ``imagenet`` (Keras'
            file, must already be on disk) or a path to VGG16 notop weights (.h5).
        freeze_blocks: VGG16 blocks 1..k kept frozen (0 = all trainable).
        dropout: dropout rate before the output layer.
        seed: initialisation seed.
        batch_norm: batch normalisation after each convolution (VGG16-BN).
            Default: on from scratch, off with pretrained weights (ImageNet
            VGG16 has none). Plain VGG16 did not learn the phantom task from
            scratch; BN folds into the convolutions at conversion, so the
            deployed graph has VGG16's layers and cost either way.
        mirror_tied: weights tied for an output that a left-right mirror
            cannot change (from scratch, with batch norm). Block 5's pool is
            left out (GAP reads its map): a 2x2 pool of an odd-width map drops
            the last column and would break the symmetry. ``size`` must then be
            a multiple of 16, so that the four pools left see even widths.

    Returns:
        An uncompiled ``keras.Model`` named ``as_vgg16``.

    Raises:
        FileNotFoundError: ImageNet weights requested but not on disk (with the fix).
        ValueError: bad ``freeze_blocks`` or ``size``, or ``mirror_tied``
            with pretrained weights or without batch norm.
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
    if batch_norm is None:
        batch_norm = not pretrained
    if batch_norm and pretrained:
        raise ValueError("pretrained VGG16 weights have no batch norm: use batch_norm=False")
    if mirror_tied and (pretrained or not batch_norm or size % 16):
        raise ValueError("mirror_tied needs weights none, batch_norm and a size that is a multiple of 16; "
                         f"got weights {weights}, batch_norm {batch_norm}, size {size}")
    if batch_norm:
        base = vgg16_bn(size, mirror_tied)
    else:
        base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
    if pretrained:
        base.load_weights(_weights_file(weights))
    else:
        _he_init(base, seed)
    freeze(base, freeze_blocks)
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    tie = {}
    if mirror_tied:
        from .mirror import channel_tie

        tie = {"kernel_constraint": channel_tie()}
    x = layers.Dense(256, activation="relu", name="fc", **tie)(x)
    x = layers.Dropout(dropout, name="drop")(x)
    out = layers.Dense(1, activation="sigmoid", name="probability")(x)
    model = keras.Model(inp, out, name="as_vgg16")
    if mirror_tied:
        from .mirror import tie_initial

        tie_initial(model)
    return model


VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16_bn(size: int, mirror_tied: bool = False):
    """VGG16's convolutional base with batch norm after each convolution.

    Same layer names as ``keras.applications.VGG16`` (``block1_conv1`` ...),
    plus ``blockK_bnJ``; convolutions carry no bias (BN's beta replaces it).
    ``mirror_tied``: tied weights (:mod:`asinfer.trainer.mirror`), no pool after block 5.
    """
    import keras
    from keras import layers

    if mirror_tied:
        from .mirror import channel_tie, conv_tie
    inp = keras.Input(shape=(size, size, 3))
    x = inp
    for b, (width, convs) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, convs + 1):
            conv_ties = {"kernel_constraint": conv_tie(first=(b, c) == (1, 1))} if mirror_tied else {}
            bn_ties = {"gamma_constraint": channel_tie(), "beta_constraint": channel_tie()} if mirror_tied else {}
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{b}_conv{c}", **conv_ties)(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"block{b}_bn{c}", **bn_ties)(x)
            x = layers.ReLU(name=f"block{b}_relu{c}")(x)
        if not (mirror_tied and b == len(VGG16_BLOCKS)):
            x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return keras.Model(inp, x, name="vgg16")


def load(path, compile: bool = False):
    """``keras.models.load_model`` that also reads mirror-tied models (their constraint class)."""
    import keras

    from . import mirror  # noqa: F401  registers MirrorTie for deserialisation

    return keras.models.load_model(path, compile=compile)


def freeze(base, blocks: int) -> None:
    """Freeze VGG16 blocks 1..``blocks``; unfreeze the rest."""
    for layer in base.layers:
        if layer.name.startswith("block"):
            layer.trainable = int(layer.name[5]) > blocks


def all_layers(model):
    """Every layer of ``model``, sub-models' layers included (after the sub-model itself)."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


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
