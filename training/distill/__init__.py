"""The distillation side of training: an archive into a generator (VAE, then latent
diffusion), and the generator's evaluation protocol."""

from training.distill.config import DistillConfig
from training.distill.run import distill

__all__ = ["DistillConfig", "distill"]
