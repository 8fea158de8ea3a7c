"""Model builders, feature taps and adapters; importing registers the builders."""

from kdistill.models import hf, hf_causal, hf_vision, static, zoo  # noqa: F401  (registers cnn, mlp, resnet, hf, hf_causal, hf_vision and static)
