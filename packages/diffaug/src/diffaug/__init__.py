"""diffaug: forward-diffusion oversampling of minority image classes (paper section 2.2)."""

from diffaug.augment import DiffusionAugmentor, plan_synthesis
from diffaug.balance import BalanceReport, balance_folder
from diffaug.schedule import NoiseSchedule, forward_diffuse

__all__ = ["BalanceReport", "DiffusionAugmentor", "NoiseSchedule", "balance_folder",
           "forward_diffuse", "plan_synthesis"]
