"""Built-in demo: a small ResNet trained on scikit-learn's digits (`nasprune_cli.demo:build`, `:score`, `:data`)."""

from nasprune_cli.demo.digits import DigitsResNet, build, data, score

__all__ = ["DigitsResNet", "build", "data", "score"]
