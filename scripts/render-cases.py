#!/usr/bin/python3
"""One row of panels: an axial plane of a volume with the ground-truth outline of a label (green)
and a predicted mask's outline (red), with the volume Dice in each title.

usage: scripts/render-cases.py -o OUT.png --image IMG --labels LABELS "TITLE:LABEL:MASK" [...]
Each panel shows the plane where the ground truth of LABEL is largest. Reads NIfTI with nibabel.
"""
import argparse

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("cases", nargs="+", help="TITLE:LABEL:MASK")
    args = parser.parse_args()
    image = np.asanyarray(nib.load(args.image).dataobj).astype(np.float32)
    labels = np.asanyarray(nib.load(args.labels).dataobj).astype(np.int32)
    low, high = np.percentile(image, [1, 99])
    fig, axes = plt.subplots(1, len(args.cases), figsize=(3.2 * len(args.cases), 3.6))
    for ax, case in zip(np.atleast_1d(axes), args.cases):
        title, label, path = case.rsplit(":", 2)
        truth = labels == int(label)
        mask = np.asanyarray(nib.load(path).dataobj) > 0
        assert mask.shape == truth.shape, f"{path}: grid {mask.shape} differs from {truth.shape}"
        dice = 2.0 * (truth & mask).sum() / max(truth.sum() + mask.sum(), 1)
        z = int(np.argmax(truth.sum(axis=(0, 1))))
        # NIfTI x runs left to right in voxel order; show with rows = y so the plane looks axial.
        ax.imshow(np.clip((image[:, :, z].T - low) / (high - low), 0, 1), cmap="gray", origin="lower")
        if truth[:, :, z].any():
            ax.contour(truth[:, :, z].T, levels=[0.5], colors="lime", linewidths=1.2, origin="lower")
        if mask[:, :, z].any():
            ax.contour(mask[:, :, z].T, levels=[0.5], colors="red", linewidths=1.2, origin="lower")
        ax.set_title(f"{title}\nvolume Dice {100 * dice:.1f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("CHAOS MR T2 p02 (never trained on): truth green, ours red", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(args.out, dpi=90)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
