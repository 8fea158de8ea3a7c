"""Model builders, feature taps and adapters; importing registers the builders."""

from kdistill.models import hf, zoo  # noqa: F401  (registers cnn, mlp, resnet and hf)
