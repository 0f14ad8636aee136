"""diffaug: forward-diffusion oversampling of minority image classes (paper section 2.2).

The modules at this level are the augmentation; `diffaug.fid` measures its images (FID/KID,
the `fid` extra), whose main names are re-exported here. They need the extra only when they
run: importing diffaug never imports torch.
"""

from diffaug.augment import DiffusionAugmentor, plan_synthesis
from diffaug.balance import BalanceReport, balance_folder, finish_shards
from diffaug.fid import (
    FidReport,
    KernelDistance,
    compute_fid,
    fid_of_balanced_classes,
    save_fid_stats,
)
from diffaug.schedule import NoiseSchedule, forward_diffuse

__all__ = ["BalanceReport", "DiffusionAugmentor", "FidReport", "KernelDistance", "NoiseSchedule",
           "balance_folder", "compute_fid", "fid_of_balanced_classes", "finish_shards",
           "forward_diffuse", "plan_synthesis", "save_fid_stats"]
