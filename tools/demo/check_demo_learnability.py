"""Is the demo dataset learnable but not trivial? Train a small CNN, report test AUC.

    OMP_NUM_THREADS=2 python tools/demo/check_demo_learnability.py DEMO_DIR [--image-size 96
        --epochs 40 --seed 0 --threads 2 --model small]

DEMO_DIR is the output of ``tools/demo/make_demo_data.py``. The goal, "learnable but not
trivial", is a test AUC in [0.75, 0.98]: a small CNN must find the stenosis often, but not
always. The network is four conv-BN-ReLU-maxpool blocks and a global max pool (a lesion is one
local feature anywhere in the frame), trained with Adam on flips/rotations of the train split;
the epoch with the best validation AUC is scored on test with sklearn's ``roc_auc_score``.

``--model`` swaps the network and keeps everything else (data, augmentation, optimiser, loss,
epoch selection): ``small`` is the CNN above, any qclassify model name (``qmobilenet``,
``resnet18``, ...) that model from scratch, fed as qclassify feeds it (grayscale repeated to
three channels, ImageNet normalisation). So it tells whether a backbone can learn the demo data
at all, apart from qclassify's training recipes.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image
from qclassify.options import MODEL_NAMES
from sklearn.metrics import roc_auc_score
from torch import nn

CLASSES = ("normal", "stenosis")
SMALL_CNN = "small"


def load_split(data_dir: Path, split: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of `split` as (N, 1, S, S) floats in [0, 1] and labels 1 = stenosis."""
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for path in sorted((data_dir / split / name).glob("*.png")):
            with Image.open(path) as image:
                resized = image.convert("L").resize((image_size, image_size), Image.BILINEAR)
            images.append(np.asarray(resized, dtype=np.float32) / 255.0)
            labels.append(label)
    return torch.from_numpy(np.stack(images)[:, None]), torch.tensor(labels, dtype=torch.float32)


def small_cnn(width: int = 16) -> nn.Module:
    blocks, channels = [], 1
    for k in range(4):
        out = width * 2**k
        blocks += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(),
                   nn.MaxPool2d(2)]
        channels = out
    return nn.Sequential(*blocks, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels, 1))


class TwoClassLogit(nn.Module):
    """A two-class qclassify model as a one-logit network on (N, 1, S, S) images in [0, 1]:
    qclassify's own batch preprocessing (`qclassify.images.normalise_batch`: three channels,
    ImageNet normalisation), and the logit difference (stenosis - normal), whose sigmoid is the
    two-class softmax's probability."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from qclassify.images import normalise_batch

        logits = self.model(normalise_batch(list(images)))
        return (logits[:, 1] - logits[:, 0]).unsqueeze(1)


def build_network(model: str) -> nn.Module:
    """The checker's network: `SMALL_CNN`, or a qclassify model name from scratch."""
    if model == SMALL_CNN:
        return small_cnn()
    from qclassify.models import build_model

    return TwoClassLogit(build_model(model, len(CLASSES), weights="none"))


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random dihedral transform per image: a stenosis stays a stenosis under all eight."""
    choice = torch.randint(0, 8, (len(batch),), generator=generator)
    out = torch.empty_like(batch)
    for k in range(8):
        picked = choice == k
        turned = torch.rot90(batch[picked], k % 4, dims=(2, 3))
        out[picked] = torch.flip(turned, dims=(3,)) if k >= 4 else turned
    return out


@torch.no_grad()
def _scores(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(chunk) for chunk in images.split(128)]).squeeze(1).numpy()


def check_learnability(data_dir: Path, *, image_size: int, epochs: int, seed: int,
                       model: str = SMALL_CNN) -> dict:
    """Train `model` (`build_network`) on train, pick the epoch by val AUC, return
    {'val_auc', 'test_auc', 'history'}."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        load_split(data_dir, split, image_size) for split in ("train", "val", "test"))
    model = build_network(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    # pos_weight balances the 280:102 prior so the minority class is not ignored.
    pos_weight = (y_train == 0).sum() / (y_train == 1).sum()
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    best, history = (-1.0, None), []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for batch in order.split(16):
            optimiser.zero_grad()
            loss = loss_fn(model(_augment(x_train[batch], generator)).squeeze(1), y_train[batch])
            loss.backward()
            optimiser.step()
        val_auc = float(roc_auc_score(y_val.numpy(), _scores(model, x_val)))
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "val_auc": val_auc, "seconds": seconds})
        if val_auc > best[0]:
            best = (val_auc, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[1])
    test_auc = float(roc_auc_score(y_test.numpy(), _scores(model, x_test)))
    return {"val_auc": best[0], "test_auc": test_auc, "history": history}


@click.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--image-size", default=96, show_default=True)
@click.option("--epochs", default=40, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=2, show_default=True, help="torch CPU threads.")
@click.option("--model", "model_name", default=SMALL_CNN, show_default=True,
              type=click.Choice([SMALL_CNN, *MODEL_NAMES]),
              help="The network: the small CNN, or a qclassify model from scratch.")
def main(data: Path, image_size: int, epochs: int, seed: int, threads: int,
         model_name: str) -> None:
    """Train a small CNN (or --model) on DATA's train split and print val/test AUC."""
    torch.set_num_threads(threads)
    result = check_learnability(data, image_size=image_size, epochs=epochs, seed=seed,
                                model=model_name)
    for row in result["history"]:
        click.echo(f"epoch {row['epoch']:2d}  val AUC {row['val_auc']:.3f}  {row['seconds']:.1f}s")
    verdict = "within" if 0.75 <= result["test_auc"] <= 0.98 else "OUTSIDE"
    click.echo(f"best val AUC {result['val_auc']:.3f}; test AUC {result['test_auc']:.3f} "
               f"({verdict} the target [0.75, 0.98])")


if __name__ == "__main__":
    main()
