"""PyTorch re-implementation of :class:`nodulejax.models.denseunet.DenseUNet3D` (benchmark only).

Same architecture, same arithmetic, loading the *same weights* from the Flax params tree, so
the JAX-vs-PyTorch throughput comparison of ``benchmarks/pgd_throughput.py`` runs
one network, not two look-alikes. Parity (forward outputs and input gradients) is tested in
``tests/benchmarks/test_torch_parity.py``.

Layout: PyTorch's NCDHW (``(B, 1, P, P, P)``); :func:`to_torch_input` converts the project's
NDHWC arrays. Parameter conversion (:func:`load_flax_params`):

* ``Conv3D.kernel`` (kd, kh, kw, Cin, Cout) -> ``Conv3d.weight`` (Cout, Cin, kd, kh, kw); both
  are cross-correlations; 'SAME' padding of a stride-1 odd kernel is ``k // 2`` on each side.
* ``GroupNorm.scale/bias`` -> ``GroupNorm.weight/bias`` (same contiguous channel groups,
  eps 1e-5; Flax uses E[x^2] - E[x]^2 for the variance, PyTorch two-pass: fp32 round-off only).
* ``Dense.kernel`` (in, out) -> ``Linear.weight`` (out, in).

The Flax module names (``stem``, ``enc{i}/NormActConv_{j}``, ``down{i}``, ``up{i}``,
``dec{i}``, ``fuse{i}``, ``out_norm``, ``cls_hidden``, ``cls_out``, ``seg_head``) are mirrored
one-to-one so the converter is a walk over the tree. Also: :func:`torch_fpr_loss` (the FPR's
own BCE / Beta-evidential loss, :mod:`nodulejax.losses`) and :func:`torch_pgd_linf` (the L-inf
PGD of :mod:`nodulejax.adversarial.pgd`: random start, signed-gradient steps, eps-ball and
[0, 1] clips).

Requires ``torch`` (pyproject extra ``bench``); imported only by the benchmark and its test.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def hparams(flax_model) -> dict:
    """The DenseUNet3D hyperparameters as a plain dict (growth expanded per level), so a
    benchmark worker can build the PyTorch twin without importing JAX."""
    m = flax_model
    n = len(m.block_layers)
    return dict(
        init_features=int(m.init_features),
        growth=[m._growth(i) for i in range(n)],
        block_layers=[int(b) for b in m.block_layers],
        compression=float(m.compression),
        cls_hidden=int(m.cls_hidden),
        head=str(m.head),
        norm_groups=int(m.norm_groups),
        up_mode=str(m.up_mode),
    )


def _groups(channels: int, max_groups: int) -> int:
    """Same rule as ``denseunet.group_norm``: largest divisor of channels <= max_groups."""
    return max(d for d in range(1, max(1, min(max_groups, channels)) + 1) if channels % d == 0)


class TNormActConv(nn.Module):
    """GN -> ReLU -> Conv3d(features, k, 'SAME')."""

    def __init__(self, cin: int, features: int, k: int, max_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(cin, max_groups), cin, eps=1e-5)
        self.conv = nn.Conv3d(cin, features, k, padding=k // 2)

    def forward(self, x):
        return self.conv(F.relu(self.norm(x)))


class TDenseBlock(nn.Module):
    def __init__(self, cin: int, layers: int, growth: int, max_groups: int):
        super().__init__()
        self.layers = nn.ModuleList(
            TNormActConv(cin + j * growth, growth, 3, max_groups) for j in range(layers)
        )
        self.cout = cin + layers * growth

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


def _voxel_shuffle(x, f: int):
    """NCDHW version of ``layers.voxel_shuffle`` with the same channel order (f, f, f, C)."""
    b, cf, d, h, w = x.shape
    c = cf // f**3
    x = x.reshape(b, f, f, f, c, d, h, w)
    x = x.permute(0, 4, 5, 1, 6, 2, 7, 3)  # b, c, d, fd, h, fh, w, fw
    return x.reshape(b, c, d * f, h * f, w * f)


class TUp(nn.Module):
    """Decoder up-sampling, mirroring DenseUNet3D's ``up{i}`` for each ``up_mode``."""

    def __init__(self, cin: int, cout: int, mode: str, max_groups: int):
        super().__init__()
        self.mode = mode
        if mode in ("nearest", "trilinear"):
            self.nac = TNormActConv(cin, cout, 1, max_groups)
        elif mode in ("resize_conv", "shuffle"):
            mult = 8 if mode == "shuffle" else 1
            self.conv = nn.Conv3d(cin, cout * mult, 3, padding=1)
        else:
            raise ValueError(f"up_mode {mode!r} not mirrored")

    def forward(self, x):
        if self.mode == "nearest":
            return F.interpolate(self.nac(x), scale_factor=2, mode="nearest")
        if self.mode == "trilinear":
            return F.interpolate(self.nac(x), scale_factor=2, mode="trilinear", align_corners=False)
        if self.mode == "resize_conv":
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return _voxel_shuffle(self.conv(x), 2)


class TorchDenseUNet3D(nn.Module):
    """PyTorch twin of ``DenseUNet3D`` built from the Flax module's hyperparameters.

    Built from a ``DenseUNet3D`` instance or from :func:`hparams` of one.
    ``forward(x (B, 1, P, P, P), task="cls")``: "ce" -> logits (B,); "beta" -> evidence (B, 2);
    ``task="seg"`` -> (B, 1, P, P, P) logits.
    """

    def __init__(self, flax_model_or_hparams):
        super().__init__()
        hp = flax_model_or_hparams
        if not isinstance(hp, dict):
            hp = hparams(hp)
        m = SimpleNamespace(**hp)
        self.head = m.head
        n = len(m.block_layers)
        growth = list(m.growth)
        g = int(m.norm_groups)
        self.n = n
        self.stem = nn.Conv3d(1, m.init_features, 3, padding=1)
        c = m.init_features
        self.enc, self.down, skips = nn.ModuleList(), nn.ModuleList(), []
        for i in range(n):
            blk = TDenseBlock(c, m.block_layers[i], growth[i], g)
            self.enc.append(blk)
            c = blk.cout
            if i < n - 1:
                skips.append(c)
                cd = max(1, int(round(c * m.compression)))
                self.down.append(TNormActConv(c, cd, 1, g))
                c = cd
        self.c_bottleneck = c
        self.up, self.dec, self.fuse = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(n - 2, -1, -1):  # stored in decoder order
            cs = skips[i]
            self.up.append(TUp(c, cs, m.up_mode, g))
            blk = TDenseBlock(cs + cs, m.block_layers[i], growth[i], g)
            self.dec.append(blk)
            self.fuse.append(TNormActConv(blk.cout, cs, 1, g))
            c = cs
        self.out_norm = nn.GroupNorm(_groups(c, g), c, eps=1e-5)
        self.seg_head = nn.Conv3d(c, 1, 1)
        self.cls_hidden = nn.Linear(self.c_bottleneck + c, m.cls_hidden)
        self.cls_out = nn.Linear(m.cls_hidden, 1 if m.head == "ce" else 2)

    def forward(self, x, task: str = "cls"):
        h = self.stem(x)
        skips = []
        for i in range(self.n):
            h = self.enc[i](h)
            if i < self.n - 1:
                skips.append(h)
                h = F.max_pool3d(self.down[i](h), 2)
        bottleneck = h
        for j, i in enumerate(range(self.n - 2, -1, -1)):
            h = torch.cat([self.up[j](h), skips[i]], dim=1)
            h = self.fuse[j](self.dec[j](h))
        h = F.relu(self.out_norm(h))
        if task == "seg":
            return self.seg_head(h)
        f = torch.cat([bottleneck.mean(dim=(2, 3, 4)), h.mean(dim=(2, 3, 4))], dim=1)
        out = self.cls_out(F.relu(self.cls_hidden(f)))
        if self.head == "ce":
            return out[:, 0]
        return F.softplus(out)


# --- weights -------------------------------------------------------------------------------
def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _conv(tc: nn.Conv3d, p) -> None:
    w = _t(p["kernel"]).permute(4, 3, 0, 1, 2).contiguous()
    if w.shape != tc.weight.shape:
        raise ValueError(f"conv kernel {tuple(w.shape)} vs torch {tuple(tc.weight.shape)}")
    tc.weight.data.copy_(w)
    tc.bias.data.copy_(_t(p["bias"]))


def _gn(tg: nn.GroupNorm, p) -> None:
    tg.weight.data.copy_(_t(p["scale"]))
    tg.bias.data.copy_(_t(p["bias"]))


def _nac(t: TNormActConv, p) -> None:
    _gn(t.norm, p["GroupNorm_0"])
    _conv(t.conv, p["Conv3D_0"])


def _dense(tl: nn.Linear, p) -> None:
    tl.weight.data.copy_(_t(p["kernel"]).T.contiguous())
    tl.bias.data.copy_(_t(p["bias"]))


@torch.no_grad()
def load_flax_params(model: TorchDenseUNet3D, params) -> TorchDenseUNet3D:
    """Copy a DenseUNet3D Flax ``params`` tree (``variables["params"]``) into ``model``."""
    p = params["params"] if "params" in params else params
    _conv(model.stem, p["stem"])
    for i in range(model.n):
        for j, layer in enumerate(model.enc[i].layers):
            _nac(layer, p[f"enc{i}"][f"NormActConv_{j}"])
        if i < model.n - 1:
            _nac(model.down[i], p[f"down{i}"])
    for j, i in enumerate(range(model.n - 2, -1, -1)):
        up = model.up[j]
        if up.mode in ("nearest", "trilinear"):
            _nac(up.nac, p[f"up{i}"])
        else:
            _conv(up.conv, p[f"up{i}"]["Conv3D_0"])
        for k, layer in enumerate(model.dec[j].layers):
            _nac(layer, p[f"dec{i}"][f"NormActConv_{k}"])
        _nac(model.fuse[j], p[f"fuse{i}"])
    _gn(model.out_norm, p["out_norm"])
    if "seg_head" in p:
        _conv(model.seg_head, p["seg_head"])
    _dense(model.cls_hidden, p["cls_hidden"])
    _dense(model.cls_out, p["cls_out"])
    return model


def from_flax(flax_model, variables) -> TorchDenseUNet3D:
    """``TorchDenseUNet3D`` with the weights of ``variables`` (float32, eval mode)."""
    return load_flax_params(TorchDenseUNet3D(flax_model), variables).eval()


def to_torch_input(x) -> torch.Tensor:
    """NDHWC (B, D, H, W, 1) array -> NCDHW float32 tensor."""
    return torch.from_numpy(np.array(np.asarray(x, np.float32).transpose(0, 4, 1, 2, 3)))


# --- the FPR loss and PGD, as in nodulejax.losses / nodulejax.adversarial.pgd ------------
def torch_fpr_loss(out, labels, head: str, kl_weight: float = 1.0):
    """Per-example loss (B,), same formulas as ``nodulejax.losses.fpr.fpr_loss``."""
    y = labels.to(out.dtype)
    if head == "ce":
        return F.softplus(out) - y * out
    a, b = out[:, 0] + 1.0, out[:, 1] + 1.0
    s = a + b
    p = a / s
    mse = 2.0 * (y - p) ** 2 + 2.0 * p * (1.0 - p) / (s + 1.0)
    at = y + (1.0 - y) * a
    bt = (1.0 - y) + y * b
    st = at + bt
    kl = (
        torch.lgamma(st)
        - torch.lgamma(at)
        - torch.lgamma(bt)
        + (at - 1.0) * (torch.digamma(at) - torch.digamma(st))
        + (bt - 1.0) * (torch.digamma(bt) - torch.digamma(st))
    )
    return mse + kl_weight * kl


def make_loss_grad(model, head: str, kl_weight: float = 1.0):
    """``fn(x, labels) -> d sum(loss) / dx``: one PGD step's forward + input backward."""

    def loss_grad(x, labels):
        x = x.detach().requires_grad_(True)
        loss = torch_fpr_loss(model(x).float(), labels, head, kl_weight).sum()
        (g,) = torch.autograd.grad(loss, x)
        return g

    return loss_grad


def torch_pgd_linf(loss_grad, x0, labels, *, eps, step_size, steps, generator=None):
    """L-inf PGD as ``nodulejax.adversarial.pgd.pgd`` (random start, bounds [0, 1]);
    returns x_adv."""
    u = torch.rand(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
    x = (x0 + eps * (2.0 * u - 1.0).to(x0.dtype)).clamp(0.0, 1.0)
    for _ in range(steps):
        g = loss_grad(x, labels)
        x = x + step_size * torch.sign(g)
        x = torch.minimum(torch.maximum(x, x0 - eps), x0 + eps).clamp(0.0, 1.0)
    return x.detach()
