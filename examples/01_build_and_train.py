"""Build a spiking network from layers, train it with a plain PyTorch loop and the HM2-BP backward, evaluate.

The data are scikit-learn's bundled 8×8 handwritten digits (``hm2bp.data.digits``, no download), coded as
Bernoulli spike trains (docs/algorithm.md §1.5). The loop is ordinary PyTorch: the HM2-BP rule (docs/algorithm.md §3) runs inside
``loss.backward()`` because the spiking layers are autograd Functions whose backward is that rule.

    python examples/01_build_and_train.py --out /tmp/hm2bp_example     # ~85 % test accuracy, ~3 s of training
    python examples/01_build_and_train.py --out /tmp/ex --epochs 1 --n-train 64 --n-test 50 --T 45

Writes ``<out>/model.pt`` (the state dict) and ``<out>/metrics.json``; prints ``test accuracy: NN.NN%``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hm2bp.data.digits import load_digits
from hm2bp.encoding import poisson_encode
from hm2bp.inference import evaluate_images
from hm2bp.loss import rate_loss, weight_regularizer
from hm2bp.nn.layers import SpikingLinear
from hm2bp.nn.network import SpikingNetwork, build_network

DESIRED, UNDESIRED, MARGIN = 15, 3, 3  # target counts of the label / other outputs, dead zone (docs/algorithm.md §3.1)


def build(hidden: int, generator: torch.Generator, from_string: bool) -> SpikingNetwork:
    """A 64-hidden-10 network: explicitly from layers, or from the paper's architecture string."""
    if from_string:  # the same network in one line
        return build_network(f"64-{hidden}-10", [2.0, 5.0], desired=DESIRED, generator=generator)
    layers = [
        SpikingLinear(64, hidden, v_th=2.0, generator=generator),                    # hidden layer, ν = 2
        SpikingLinear(hidden, 10, v_th=5.0, lateral_inhibition=1.0, output=True,     # output layer, ν = 5,
                      desired=DESIRED, generator=generator),                         # lateral w0 = 1 (§1.2)
    ]
    return SpikingNetwork(layers, input_shape=(64,), arch=f"64-{hidden}-10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for model.pt and metrics.json")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=600, help="training images (of 1,437)")
    ap.add_argument("--n-test", type=int, default=360, help="test images (of 360)")
    ap.add_argument("--T", type=int, default=60, help="time steps per sample (>= 3 * desired count)")
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--from-string", action="store_true", help="use build_network('64-H-10', ...) instead")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    # data: uint8 images [N, 8, 8] in 0..255, labels [N]; one fixed raster per training image
    x_img, y = load_digits("train")
    x_img, y = torch.as_tensor(x_img[: args.n_train]), torch.as_tensor(y[: args.n_train])
    test_img, test_y = load_digits("test")
    test_img, test_y = test_img[: args.n_test], test_y[: args.n_test]
    g = torch.Generator().manual_seed(args.seed)
    spikes = poisson_encode(x_img, args.T, g)                      # bool [T, N, 64]

    net = build(args.hidden, g, args.from_string)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    print(net)

    history = []
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(y), generator=g)
        loss_sum, correct = 0.0, 0
        for i in range(0, len(y), args.batch_size):
            idx = order[i : i + args.batch_size]
            x = spikes[:, idx].float()                              # [T, B, 64]
            labels = y[idx]
            counts = net(x, labels).sum(0)                          # output counts o [B, 10]
            loss = rate_loss(counts, labels, desired=DESIRED, undesired=UNDESIRED, margin=MARGIN)
            total = loss + weight_regularizer(net, lam=1.0, beta=0.04)   # soft weight-norm penalty (§4.1)
            opt.zero_grad()
            total.backward()                                        # the HM2-BP rule, layer by layer
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((counts.argmax(1) == labels).sum())
        # evaluation: fresh Bernoulli rasters of the test images, arg-max of the counts (docs/algorithm.md §1.3)
        res = evaluate_images(net, test_img, test_y, args.T, generator=torch.Generator().manual_seed(1))
        rec = {"epoch": epoch, "train_loss": loss_sum / len(y), "train_acc": correct / len(y),
               "test_acc": res.accuracy, "time_s": round(time.perf_counter() - t0, 2)}
        history.append(rec)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {rec['train_loss']:.2f}  train {100 * rec['train_acc']:.1f}%  "
              f"test {100 * res.accuracy:.1f}%  ({rec['time_s']} s)")

    torch.save(net.state_dict(), args.out / "model.pt")
    (args.out / "metrics.json").write_text(json.dumps(history, indent=2) + "\n")
    print(f"test accuracy: {100 * history[-1]['test_acc']:.2f}%")


if __name__ == "__main__":
    main()
