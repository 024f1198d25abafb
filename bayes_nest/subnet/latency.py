r"""Measured latency as a cost model: per-layer timings on this machine, interpolated over widths.

Analytic MACs are a proxy; what a deployment cares about is time on *its* hardware. A
:class:`LatencyTable` times every convolution and linear layer of a nested model (with its
batch-norm and activation: the plain layers :func:`~bayes_nest.subnet.export` produces) at a grid
of input and output widths, and every other leaf module it calls (pooling, plain normalisation
and activation modules) at a grid of input widths, on the user's own machine, with warm-up runs,
a fixed number of threads and the median of repeated runs. The latency of a sub-network is then

.. math:: T(c) = \sum_{\ell \text{ run in } c} \hat t_\ell(d^{in}_\ell, d^{out}_\ell) + T_0,

with :math:`\hat t_\ell` bilinear interpolation of layer :math:`\ell`'s table at the widths it has
in config :math:`c` (found by tracing, like the analytic costs; dropped residual blocks cost
nothing) and :math:`T_0` a constant for everything not timed per module (functional operations
in ``forward`` such as residual adds and global pooling, framework overhead), fitted as the median gap between measured end-to-end latencies of a few
exported sub-networks and the summed layer times. Because the network is nested, the table is
small: one row per (layer, width level), not per architecture.

Tables are saved as JSON and can be reloaded for the same model; :meth:`LatencyTable.check`
compares predictions with end-to-end measurements.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..nn.axis import NestedModule
from ..nn.bayesian import BayesianConv2d, BayesianLinear
from ..nn.width import _NestedWidth
from ._trace import check_input_fits, check_input_shape, trace
from .config import full, smallest, use, validate_config

__all__ = ["LatencyTable", "measure_latency"]


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def measure_latency(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
) -> float:
    """Median wall time (seconds) of one forward pass of ``module`` on a random batch.

    Runs in eval mode under ``torch.inference_mode`` with ``threads`` intra-op threads, after
    ``warmup`` untimed runs.
    """
    shape = check_input_fits(module, input_shape)
    _check_int(batch_size, "batch_size")
    _check_int(threads, "threads")
    _check_int(warmup, "warmup", 0)
    _check_int(repeats, "repeats")
    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randn((batch_size, *shape), device=device)
    was_training = module.training
    module.eval()
    times = []
    try:
        with _threads(threads), torch.inference_mode():
            for _ in range(warmup):
                module(x)
            for _ in range(repeats):
                start = time.perf_counter()
                module(x)
                times.append(time.perf_counter() - start)
    finally:
        module.train(was_training)
    return statistics.median(times)


def _sites(
    module: nn.Module, config: Mapping[str, int], input_shape
) -> tuple[dict[str, dict], dict[str, nn.Module]]:
    """Timed operations run by ``config``: site key -> description, and site key -> module.

    Sites are convolution and linear layers (with the batch-norm and activation of their width
    layer) and every other leaf module called on a tensor (pooling, plain normalisation,
    activations), keyed by module path (``path#k`` for the ``k``-th call of a module).
    """
    out: dict[str, dict] = {}
    modules: dict[str, nn.Module] = {}
    owners = {id(m.affine): m for m in module.modules() if isinstance(m, _NestedWidth)}
    inner = {id(m.norm) for m in module.modules() if isinstance(m, _NestedWidth)}
    calls_seen: dict[int, int] = {}
    for call in trace(module, config, input_shape=input_shape).calls:
        m = call.module
        k = calls_seen.get(id(m), 0)
        calls_seen[id(m)] = k + 1
        key = call.path if k == 0 else f"{call.path}#{k}"
        if call.output_shape is None or not call.input_shapes:
            continue
        kind = "conv" if isinstance(m, nn.Conv2d | BayesianConv2d) else None
        if isinstance(m, nn.Linear | BayesianLinear):
            kind = "linear"
        if kind is None:
            leaf = next(iter(m.children()), None) is None
            if leaf and not isinstance(m, NestedModule) and id(m) not in inner:
                shape = call.input_shape
                out[key] = {
                    "kind": "op",
                    "op": type(m).__name__,
                    "in": shape[1],
                    "out": 0,
                    "spatial": list(shape[2:]),
                }
                modules[key] = m
            continue
        dim = 1 if kind == "conv" else -1
        owner = owners.get(id(m))
        site = {
            "kind": kind,
            "in": call.input_shape[dim],
            "out": call.output_shape[dim],
            "spatial": list(call.input_shape[2:]) if kind == "conv" else [],
            "norm": owner is not None and owner.norm is not None,
            "act": _activation_name(owner),
        }
        if kind == "conv":
            site.update(
                kernel=list(m.kernel_size),
                stride=_pair(m.stride),
                padding=_pair(m.padding),
                dilation=_pair(m.dilation),
            )
        out[key] = site
        modules[key] = m
    return out, modules


def _activation_name(owner: nn.Module | None) -> str | None:
    if owner is None or owner.activation is None:
        return None
    from ._exporters import activation_module

    try:
        return type(activation_module(owner.activation, "")).__name__
    except TypeError:
        return "ReLU"  # an activation export does not know: time a ReLU in its place


def _pair(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _layer(site: Mapping[str, Any], d_in: int, d_out: int) -> nn.Module:
    if site["kind"] == "linear":
        parts: list[nn.Module] = [nn.Linear(d_in, d_out)]
        norm = nn.BatchNorm1d(d_out)
    else:
        padding = site["padding"]
        parts = [
            nn.Conv2d(
                d_in,
                d_out,
                tuple(site["kernel"]),
                stride=tuple(site["stride"])
                if isinstance(site["stride"], list)
                else site["stride"],
                padding=tuple(padding) if isinstance(padding, list) else padding,
                dilation=tuple(site["dilation"])
                if isinstance(site["dilation"], list)
                else site["dilation"],
                bias=False,
            )
        ]
        norm = nn.BatchNorm2d(d_out)
    if site["norm"]:
        parts.append(norm)
    if site["act"]:
        act = getattr(nn, site["act"], None)
        parts.append(act() if isinstance(act, type) else nn.ReLU())
    return nn.Sequential(*parts).eval()


def _op(module: nn.Module, channels: int) -> nn.Module:
    """A copy of a parameter-free (or fixed-size) leaf module to time at ``channels``."""
    op = copy.deepcopy(module).eval()
    if channels != getattr(module, "num_features", channels):
        raise ValueError(f"cannot time {type(module).__name__} at {channels} channels")
    return op


def _levels(low: int, high: int, n: int) -> list[int]:
    values = {max(1, round(high * j / n)) for j in range(1, n + 1)} | {low, high}
    return sorted(v for v in values if low <= v <= high)


def _interp(grid: Sequence[int], value: float) -> tuple[int, int, float]:
    """Indices ``i, j`` and weight ``w`` of ``value`` between ``grid[i]`` and ``grid[j]``."""
    if value <= grid[0]:
        return 0, 0, 0.0
    if value >= grid[-1]:
        n = len(grid) - 1
        return n, n, 0.0
    for j in range(1, len(grid)):
        if value <= grid[j]:
            i = j - 1
            return i, j, (value - grid[i]) / (grid[j] - grid[i])
    raise AssertionError("unreachable")


class LatencyTable:
    """Per-layer latency table of a nested model; callable as a cost model ``config -> s``.

    Build one with :meth:`measure`; see the module docstring for the model of latency.

    Attributes
    ----------
    sites : dict
        Layer path to its description and ``"in_levels"``, ``"out_levels"``, ``"seconds"`` (a
        matrix of median times over the two level grids).
    overhead : float
        The constant :math:`T_0` in seconds.
    batch_size, threads : int
        Measurement settings (predictions are for the same ones).
    """

    metric = "latency"

    def __init__(
        self,
        module: nn.Module,
        input_shape: Sequence[int],
        sites: Mapping[str, Mapping[str, Any]],
        *,
        overhead: float = 0.0,
        batch_size: int = 1,
        threads: int = 1,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.module = module
        self.input_shape = check_input_shape(input_shape)
        self.sites = {k: dict(v) for k, v in sites.items()}
        self.overhead = float(overhead)
        self.batch_size = batch_size
        self.threads = threads
        self.meta = dict(meta or {})

    @classmethod
    def measure(
        cls,
        module: nn.Module,
        input_shape: Sequence[int],
        *,
        batch_size: int = 1,
        threads: int = 1,
        levels: int = 4,
        warmup: int = 5,
        repeats: int = 30,
        calibration_configs: Sequence[Mapping[str, int]] | None = None,
        progress: bool = True,
    ) -> LatencyTable:
        """Time every layer of ``module`` at ``levels`` input and output widths.

        Parameters
        ----------
        module : nn.Module
            The nested model.
        input_shape : sequence of int
            Shape of one example.
        batch_size, threads : int
            Deployment batch size and intra-op threads to time with.
        levels : int
            Width levels per dimension (plus the smallest and largest widths seen).
        warmup, repeats : int
            Untimed and timed runs per measurement (the median is kept).
        calibration_configs : sequence of Mapping, optional
            Configs whose exported networks are timed end to end to fit the overhead
            (default: the full and the smallest network).
        progress : bool
            Show a progress bar.
        """
        from .export import export

        shape = check_input_fits(module, input_shape)
        _check_int(levels, "levels")
        _check_int(batch_size, "batch_size")
        _check_int(threads, "threads")
        big, live = _sites(module, full(module), shape)
        small, _ = _sites(module, smallest(module), shape)
        sites: dict[str, dict] = {}
        for path, site in big.items():
            low = small.get(path, {"in": 1, "out": 1})
            site = dict(site)
            site["in_levels"] = _levels(min(low["in"], site["in"]), site["in"], levels)
            site["out_levels"] = _levels(min(low["out"], site["out"]), site["out"], levels)
            sites[path] = site
        total = sum(len(s["in_levels"]) * len(s["out_levels"]) for s in sites.values())
        bar = tqdm(total=total, disable=not progress, desc="timing layers")
        for path, site in sites.items():
            spatial = tuple(site["spatial"])
            seconds = []
            for d_in in site["in_levels"]:
                row = []
                for d_out in site["out_levels"]:
                    op = (
                        _op(live[path], d_in) if site["kind"] == "op" else _layer(site, d_in, d_out)
                    )
                    row.append(
                        measure_latency(
                            op,
                            (d_in, *spatial),
                            batch_size=batch_size,
                            threads=threads,
                            warmup=warmup,
                            repeats=repeats,
                        )
                    )
                    bar.update(1)
                seconds.append(row)
            site["seconds"] = seconds
        bar.close()
        meta = {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "warmup": warmup,
            "repeats": repeats,
        }
        table = cls(module, shape, sites, batch_size=batch_size, threads=threads, meta=meta)
        configs = calibration_configs or [full(module), smallest(module)]
        gaps = []
        for config in configs:
            measured = measure_latency(
                export(module, config, input_shape=shape),
                shape,
                batch_size=batch_size,
                threads=threads,
                warmup=warmup,
                repeats=repeats,
            )
            gaps.append(measured - table.layer_seconds(config))
        table.overhead = max(0.0, statistics.median(gaps))
        return table

    def layer_seconds(self, config: Mapping[str, int]) -> float:
        """Summed interpolated layer times of ``config`` (without the overhead)."""
        config = validate_config(self.module, config)
        with use(self.module, config):
            seen, _ = _sites(self.module, config, self.input_shape)
        total = 0.0
        for path, site in seen.items():
            table = self.sites.get(path)
            if table is None:
                raise ValueError(f"layer {path!r} is not in the latency table; re-measure it")
            i0, i1, wi = _interp(table["in_levels"], site["in"])
            o0, o1, wo = _interp(table["out_levels"], site["out"])
            t = table["seconds"]
            total += (1 - wi) * ((1 - wo) * t[i0][o0] + wo * t[i0][o1]) + wi * (
                (1 - wo) * t[i1][o0] + wo * t[i1][o1]
            )
        return total

    def __call__(self, config: Mapping[str, int]) -> float:
        """Predicted latency of ``config`` in seconds per batch."""
        return self.layer_seconds(config) + self.overhead

    def check(
        self, configs: Sequence[Mapping[str, int]], *, warmup: int = 5, repeats: int = 30
    ) -> list[dict[str, float]]:
        """Predicted versus measured end-to-end latency of the exported ``configs``."""
        from .export import export

        rows = []
        for config in configs:
            measured = measure_latency(
                export(self.module, config, input_shape=self.input_shape),
                self.input_shape,
                batch_size=self.batch_size,
                threads=self.threads,
                warmup=warmup,
                repeats=repeats,
            )
            rows.append({"predicted": self(config), "measured": measured})
        return rows

    # ------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "batch_size": self.batch_size,
            "threads": self.threads,
            "overhead": self.overhead,
            "meta": self.meta,
            "sites": self.sites,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, module: nn.Module) -> LatencyTable:
        """Read a table saved by :meth:`save`, for ``module`` (the model it was measured on)."""
        data = json.loads(Path(path).read_text())
        try:
            return cls(
                module,
                data["input_shape"],
                data["sites"],
                overhead=data["overhead"],
                batch_size=data["batch_size"],
                threads=data["threads"],
                meta=data.get("meta"),
            )
        except KeyError as err:
            raise ValueError(f"{path} is not a latency table (missing {err})") from None
