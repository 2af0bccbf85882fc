"""asinfer trainer: phantoms, the VGG16 classifier, training and conversion.

Importing this package is cheap and never imports TensorFlow: modules that need
it (training, conversion) import it inside the functions that use it, so the
phantom generator works with only the engine's dependencies installed.
"""
