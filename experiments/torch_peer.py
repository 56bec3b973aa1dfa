"""The PyTorch peer of `pga benchmark`: the reference's conv_mnist train steps in plain PyTorch.

For each of --methods (ae, vae, lpga, vpga) it builds conv_mnist's encoder
and decoder (no batch norm) and the method's optimizer, runs 3 untimed steps
on one fixed batch of --batch random images in [-1, 1], then times --steps
steps, and prints one JSON line {method: images per second}, the batch size
over the median step time. `pga benchmark --peer_command` runs it between
its own timing rounds and reports the ratio per round; on a shared machine
only such same-session ratios mean anything.

What a step computes, as the authors' TensorFlow code does
(docs/reference_code.md), written as a PyTorch user would write it:
- networks: f = conv(64) lrelu, conv(128) lrelu, dense(1024) lrelu, dense(H)
  (and a log-variance head for vae/vpga, bias 2 log 0.1); g = dense(1024)
  relu, dense(7x7x128) relu, deconv(64) relu, deconv(1) tanh; 5x5 kernels,
  stride 2, Glorot-uniform weights, zero biases. H = 12 (ae, lpga), 32 (vae,
  vpga). h = f(g(.)).
- ae: mean((g(f(x)) - x)^2), both networks; SGD, momentum 0.9, lr 0.1.
- vae (the public VAE's recipe): mean((g(mu + sigma n) - x)^2) + 0.1 KL,
  both networks; Adam, lr 2e-4, betas (0.5, 0.999).
- lpga, after its warm-up (every term on): the encoder's gradient from
  L_r + 0.06 mean((h(z_prior) - z_prior)^2) + 0.015 Eq. 5, the decoder's
  from L_r + 0.015 Eq. 6 (one perturbation of radius 0.01 sqrt(H) per
  example around sg(f(x))); SGD as for ae.
- vpga: x reconstructed from mu; the encoder's gradient from L_r + 0.06
  L_lr,N + 0.01 vrec + 0.02 KL, the decoder's from L_r + 0.01 vrec, where
  vrec compares h(sg(mu)) and h(sg(mu) + sigma n) (the encoder's weights
  frozen inside h, scaled by the batch RMS of mu); SGD as for ae.
Each routed step takes the two gradients with `torch.autograd.grad` and
applies them in one optimizer step, as the reference applies
`compute_gradients(enc_loss, enc_vars)` and `(dec_loss, dec_vars)`.

torch is not a dependency of pga_jax. The test environment has a CPU build
(requirements-test.txt), so from a clone after `make install`:

  .venv/bin/python experiments/torch_peer.py --methods ae,vae,lpga,vpga --batch 64 --steps 20

or in a venv of its own:

  python3 -m venv /tmp/torch-peer
  /tmp/torch-peer/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
  /tmp/torch-peer/bin/python experiments/torch_peer.py --methods lpga

and beside our step (experiments/benchmarks.sh does this for the four methods):

  pga benchmark --config=experiments/configs/mnist_lpga.py --peer_rounds=5 \\
      --peer_command='.venv/bin/python experiments/torch_peer.py --methods {method} \\
      --batch {batch} --steps {steps}'
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

METHODS = ('ae', 'vae', 'lpga', 'vpga')
LATENT_DIM = {'ae': 12, 'lpga': 12, 'vae': 32, 'vpga': 32}
WIDTH = 64  # the reference's `dim`
ZN_REC, NLL, VREC, VKLD, BETA = 6e-2, 1.5e-2, 1e-2, 2e-2, 0.1  # published MNIST values
WARMUP_STEPS = 3


def _glorot(layer: nn.Module) -> nn.Module:
  nn.init.xavier_uniform_(layer.weight)
  nn.init.zeros_(layer.bias)
  return layer


def _weights(layer: nn.Module, frozen: bool):
  """(weight, bias) of a layer; detached when `frozen` (inputs keep their gradient)."""
  if frozen:
    return layer.weight.detach(), layer.bias.detach()
  return layer.weight, layer.bias


class Encoder(nn.Module):
  """f: 28x28x1 images -> mean (and log-variance when `variational`)."""

  def __init__(self, latent_dim: int, variational: bool):
    super().__init__()
    self.conv1 = _glorot(nn.Conv2d(1, WIDTH, 5, stride=2, padding=2))
    self.conv2 = _glorot(nn.Conv2d(WIDTH, 2 * WIDTH, 5, stride=2, padding=2))
    self.hidden = _glorot(nn.Linear(7 * 7 * 2 * WIDTH, 1024))
    self.mean = _glorot(nn.Linear(1024, latent_dim))
    self.log_var = _glorot(nn.Linear(1024, latent_dim)) if variational else None
    if variational:
      nn.init.constant_(self.log_var.bias, 2 * math.log(0.1))  # sigma = 0.1 at the start

  def forward(self, images: torch.Tensor, frozen: bool = False):
    act = F.leaky_relu(F.conv2d(images, *_weights(self.conv1, frozen), stride=2, padding=2), 0.2)
    act = F.leaky_relu(F.conv2d(act, *_weights(self.conv2, frozen), stride=2, padding=2), 0.2)
    act = F.leaky_relu(F.linear(act.flatten(1), *_weights(self.hidden, frozen)), 0.2)
    mean = F.linear(act, *_weights(self.mean, frozen))
    if self.log_var is None:
      return mean, None
    return mean, F.linear(act, *_weights(self.log_var, frozen))


class Decoder(nn.Module):
  """g: latents -> 28x28x1 images in [-1, 1]."""

  def __init__(self, latent_dim: int):
    super().__init__()
    self.hidden = _glorot(nn.Linear(latent_dim, 1024))
    self.to_map = _glorot(nn.Linear(1024, 7 * 7 * 2 * WIDTH))
    self.up1 = _glorot(nn.ConvTranspose2d(2 * WIDTH, WIDTH, 5, 2, padding=2, output_padding=1))
    self.up2 = _glorot(nn.ConvTranspose2d(WIDTH, 1, 5, 2, padding=2, output_padding=1))

  def forward(self, latents: torch.Tensor) -> torch.Tensor:
    act = F.relu(self.to_map(F.relu(self.hidden(latents))))
    act = F.relu(self.up1(act.view(-1, 2 * WIDTH, 7, 7)))
    return torch.tanh(self.up2(act))


def kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
  """KL(N(mean, exp(log_var)) || N(0, I)), averaged over batch and latent dimensions."""
  return torch.mean(-0.5 * (1 + log_var - mean.square() - log_var.exp()))


class PeerStep:
  """One train step of `method`: `step(images)` updates both networks in place."""

  def __init__(self, method: str, batch: int):
    if method not in METHODS:
      raise SystemExit(f'torch_peer: unknown method {method!r}; choose from {", ".join(METHODS)}')
    self.method, self.batch = method, batch
    self.latent_dim = LATENT_DIM[method]
    self.encoder = Encoder(self.latent_dim, variational=method in ('vae', 'vpga'))
    self.decoder = Decoder(self.latent_dim)
    self.encoder_params = list(self.encoder.parameters())
    self.decoder_params = list(self.decoder.parameters())
    params = self.encoder_params + self.decoder_params
    if method == 'vae':
      self.optimizer = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))
    else:
      self.optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)

  def h(self, latents: torch.Tensor, frozen_encoder: bool = False) -> torch.Tensor:
    return self.encoder(self.decoder(latents), frozen=frozen_encoder)[0]

  def _prior(self) -> torch.Tensor:
    return torch.randn(self.batch, self.latent_dim)

  def one_loss(self, images: torch.Tensor) -> torch.Tensor:
    """ae and vae: one loss for both networks."""
    mean, log_var = self.encoder(images)
    if self.method == 'ae':
      return F.mse_loss(self.decoder(mean), images)
    latents = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
    return F.mse_loss(self.decoder(latents), images) + BETA * kl(mean, log_var)

  def lpga_losses(self, images: torch.Tensor):
    """(encoder loss, decoder loss) of LPGA after its warm-up."""
    H = self.latent_dim
    z, _ = self.encoder(images)
    reconstruction = F.mse_loss(self.decoder(z), images)
    prior = self._prior()
    latent_reconstruction = F.mse_loss(self.h(prior), prior)
    # Eq. 5: the Gaussian negative log density of f(x) (its constant has no gradient), over H.
    nll_encoder = torch.mean(0.5 * z.square().sum(1)) / H
    # Eq. 6: one perturbation per example, uniform on the sphere of radius r.
    radius = 0.01 * math.sqrt(H)
    centre = z.detach()
    direction = torch.randn_like(centre)
    perturbed = centre + radius * direction / direction.norm(dim=1, keepdim=True)
    stretch = ((self.h(perturbed) - self.h(centre)) / radius).square().sum(1)
    nll_decoder = torch.mean(H / 2 * torch.log(stretch)) / H
    encoder_loss = reconstruction + ZN_REC * latent_reconstruction + NLL * nll_encoder
    decoder_loss = reconstruction + NLL * nll_decoder
    return encoder_loss, decoder_loss

  def vpga_losses(self, images: torch.Tensor):
    """(encoder loss, decoder loss) of VPGA (no warm-up)."""
    mean, log_var = self.encoder(images)
    reconstruction = F.mse_loss(self.decoder(mean), images)
    prior = self._prior()
    latent_reconstruction = F.mse_loss(self.h(prior), prior)
    centre = mean.detach()
    noise = torch.exp(0.5 * log_var) * torch.randn_like(mean)  # sigma keeps its gradient
    scale = centre.square().mean(0).sqrt()
    vrec = F.mse_loss(
      self.h(centre, frozen_encoder=True) / scale,
      self.h(centre + noise, frozen_encoder=True) / scale,
    )
    kld = kl(mean, log_var)
    encoder_loss = reconstruction + ZN_REC * latent_reconstruction + VREC * vrec + VKLD * kld
    decoder_loss = reconstruction + VREC * vrec
    return encoder_loss, decoder_loss

  def __call__(self, images: torch.Tensor) -> None:
    self.optimizer.zero_grad(set_to_none=True)
    if self.method in ('ae', 'vae'):
      self.one_loss(images).backward()
    else:
      losses = self.lpga_losses if self.method == 'lpga' else self.vpga_losses
      encoder_loss, decoder_loss = losses(images)
      encoder_grads = torch.autograd.grad(encoder_loss, self.encoder_params, retain_graph=True)
      decoder_grads = torch.autograd.grad(decoder_loss, self.decoder_params)
      for param, grad in zip(
        self.encoder_params + self.decoder_params, encoder_grads + decoder_grads
      ):
        param.grad = grad
    self.optimizer.step()


def images_per_sec(method: str, batch: int, steps: int) -> float:
  """batch / median step time over `steps` steps after WARMUP_STEPS untimed ones."""
  step = PeerStep(method, batch)
  images = torch.rand(batch, 1, 28, 28) * 2 - 1
  for _ in range(WARMUP_STEPS):
    step(images)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step(images)
    times.append(time.perf_counter() - start)
  return batch / statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--methods', default=','.join(METHODS), help='comma-separated methods')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--steps', type=int, default=20, help='timed steps per method')
  parser.add_argument('--threads', type=int, default=None, help="torch's intra-op threads")
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  result = {
    method: round(images_per_sec(method, args.batch, args.steps), 1)
    for method in args.methods.split(',')
  }
  print(json.dumps(result))


if __name__ == '__main__':
  main()
