"""FID and KID between image sets, as pytorch-fid computes them (the `fid` extra).

Not part of the augmentation itself: the measure of how close synthetic images are to the
originals (paper section 3). One idea per module, lower layers first:

- `inception`: pytorch-fid's network, its block table and its weights (safe loading);
- `onnx_engine`: that network exported to ONNX and run by ONNX Runtime (the CPU default);
- `runtime`: what runs it: the extra's presence, the device, the engine;
- `images`: image files as the network's input (pytorch-fid's extensions and scaling);
- `features`: image files -> pool features, batched and decoded on threads;
- `frechet`: Gaussian statistics, .npz files and the Fréchet distance (numpy only);
- `kid`: the kernel Inception distance (numpy only);
- `score`: the metric: `compute_fid`, `save_fid_stats`, `fid_of_balanced_classes`.

torch, torchvision, pytorch-fid and ONNX Runtime are imported inside functions only, so this
package imports without them; statistics files and the distances need none of them.
"""

from diffaug.fid.features import InceptionFeatures
from diffaug.fid.frechet import FeatureStatistics, frechet_distance
from diffaug.fid.inception import FID_DIMS, InceptionWeightsError, inception_weights_path
from diffaug.fid.kid import KernelDistance, kernel_inception_distance
from diffaug.fid.runtime import ENGINES, FidExtraMissingError, require_fid_extra
from diffaug.fid.score import (
    FewImagesWarning,
    FidReport,
    compute_fid,
    fid_of_balanced_classes,
    save_fid_stats,
)

__all__ = ["ENGINES", "FID_DIMS", "FeatureStatistics", "FewImagesWarning", "FidExtraMissingError",
           "FidReport", "InceptionFeatures", "InceptionWeightsError", "KernelDistance",
           "compute_fid", "fid_of_balanced_classes", "frechet_distance",
           "inception_weights_path", "kernel_inception_distance", "require_fid_extra",
           "save_fid_stats"]
