"""Teacher-output cache: pay a frozen teacher's forward pass once per fold, not once per student epoch.

Augmentation is a pure function of (seed, epoch, sample) (see :mod:`kdcore.sampling`), so the teacher's
outputs for the views a student will see can be computed before it trains and shared by every student that
draws the same stream (sweep trials, a rerun, a resumed run).

Two modes:

- ``views``: one entry per (epoch, sample) view of the student's own stream, built with the student's
  batches, so a student trained from the cache sees exactly the numbers online distillation would compute.
- ``pool``: FKD-style (Shen & Xing 2022): a fixed pool of ``M`` augmented views per image; every epoch each
  sample draws one of its ``M`` views. The student then sees fewer distinct views: an approximation of online
  distillation, reported as such.

On disk (one folder per fold and mode) the cache is memory-mapped ``.npy`` arrays: ``seeds.npy`` (slots, N)
the augmentation seed of every view, ``filled.npy`` (slots, N) which views are done, and one array per teacher
output (slots, N, ...) in float16 or float32, with ``cache.json`` holding what the outputs depend on (teacher
weights hash, augmentation settings, manifest hash, stream). A cache whose ``cache.json`` differs is refused
by name and rebuilt; a killed build resumes from the views already filled.

Example:
    >>> import tempfile, torch
    >>> from torch.utils.data import DataLoader
    >>> from kdcore.sampling import SeededSampler, split_key
    >>> class Noise(torch.utils.data.Dataset):
    ...     def __len__(self): return 6
    ...     def __getitem__(self, key):
    ...         index, seed = split_key(key)
    ...         g = torch.Generator().manual_seed(seed or 0)
    ...         return {"image": torch.randn(3, 8, 8, generator=g), "index": index}
    >>> loader = DataLoader(ViewKeyed(Noise()), batch_size=2, sampler=SeededSampler(6, seed=1))
    >>> teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3)).eval()
    >>> folder = tempfile.mkdtemp()
    >>> cache = TeacherCache.build(folder, "views", loader, lambda x: {"logits": teacher(x)}, epochs=2,
    ...                            identity={"teacher": "t0"})
    >>> batch = next(iter(loader))
    >>> torch.equal(cache.lookup(batch)["logits"], teacher(batch["image"]))
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from .atomic import atomic_write_json
from .errors import ConfigError, TrainingError
from .logs import get_logger
from .sampling import SeededSampler, split_key
from .seeding import derive_seed, rng_state, set_rng_state

__all__ = ["TeacherCache", "CachedTeacher", "ViewKeyed", "PoolSampler", "pool_loader", "file_sha256",
           "CacheMode", "cached_teacher", "feature_output"]
log = get_logger(__name__)
CacheMode = Literal["views", "pool"]
_FORMAT = 1


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes (the teacher's weights identify the teacher)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class ViewKeyed(Dataset):
    """Adds ``"view"`` (the augmentation seed, -1 for evaluation keys) to every item of ``dataset``.

    Together with ``"index"`` it names the view a cached teacher output belongs to.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = split_key(key)
        item = dict(self.dataset[key])
        item.setdefault("index", index)
        item["view"] = -1 if seed is None else seed
        return item

    def __getattr__(self, name: str) -> Any:
        # Delegate dataset attributes (targets, records); guard "dataset" itself for unpickling in workers.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _pool_view_seed(seed: int, view: int, index: int) -> int:
    return derive_seed(seed, "pool", view, index)


class PoolSampler(Sampler[tuple[int, int]]):
    """The order of ``base`` (a :class:`SeededSampler`), each sample drawing one of its ``views`` pool views.

    The draw is a pure function of the base key, so a resumed run draws the same views.
    """

    def __init__(self, base: SeededSampler, views: int, seed: int):
        if views < 1:
            raise ConfigError(f"teacher cache pool: needs at least 1 view per image, got {views}")
        self.base, self.views, self.seed = base, views, seed

    @property
    def epoch(self) -> int:
        return self.base.epoch

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index, key_seed in self.base:
            view = derive_seed(key_seed, "pick") % self.views
            yield index, _pool_view_seed(self.seed, view, index)


def _loader_options(loader: DataLoader) -> dict:
    options = {"num_workers": loader.num_workers, "pin_memory": loader.pin_memory,
               "worker_init_fn": loader.worker_init_fn, "collate_fn": loader.collate_fn}
    if loader.num_workers > 0:
        options.update(persistent_workers=loader.persistent_workers, prefetch_factor=loader.prefetch_factor)
    return options


def _rebuilt(loader: DataLoader, dataset: Dataset | None = None, sampler: Sampler | None = None) -> DataLoader:
    return DataLoader(dataset or loader.dataset, batch_size=loader.batch_size, drop_last=loader.drop_last,
                      sampler=sampler or loader.sampler, **_loader_options(loader))


def pool_loader(loader: DataLoader, views: int, seed: int) -> DataLoader:
    """``loader`` (built on a :class:`SeededSampler`) drawing from a pool of ``views`` views per sample."""
    if not isinstance(loader.sampler, SeededSampler):
        raise TypeError(f"pool_loader needs a SeededSampler, got {type(loader.sampler).__name__}")
    return _rebuilt(loader, sampler=PoolSampler(loader.sampler, views, seed))


def _plan(mode: CacheMode, loader: DataLoader, epochs: int, pool_views: int) -> tuple[np.ndarray, list[list]]:
    """``(seeds (slots, N), batches of (slot, index, seed))`` in the order the build computes them.

    ``views`` follows the student's own batches epoch by epoch (same composition, so the same numbers);
    ``pool`` enumerates every (view, sample) in order.
    """
    sampler = loader.sampler
    n = len(loader.dataset)
    if mode == "views":
        if not isinstance(sampler, SeededSampler):
            raise TypeError(f"a views cache needs the loader's SeededSampler, got {type(sampler).__name__}")
        if sampler.world_size != 1:
            raise ConfigError("student.teacher_cache: not supported under DDP yet (each rank draws its own shard)")
        seeds = np.zeros((epochs, n), dtype=np.int64)
        batches: list[list] = []
        previous = sampler.epoch
        try:
            for epoch in range(epochs):
                sampler.set_epoch(epoch)
                for keys in BatchSampler(sampler, loader.batch_size, loader.drop_last):
                    batches.append([(epoch, index, seed) for index, seed in keys])
                    for index, seed in keys:
                        seeds[epoch, index] = seed
        finally:
            sampler.set_epoch(previous)
        return seeds, batches
    if not isinstance(sampler, PoolSampler):
        raise TypeError(f"a pool cache needs a PoolSampler (see pool_loader), got {type(sampler).__name__}")
    seeds = np.array([[_pool_view_seed(sampler.seed, view, index) for index in range(n)]
                      for view in range(pool_views)], dtype=np.int64)
    flat = [(view, index, int(seeds[view, index])) for view in range(pool_views) for index in range(n)]
    size = loader.batch_size or 1
    return seeds, [flat[i:i + size] for i in range(0, len(flat), size)]


class TeacherCache:
    """A fold's cached teacher outputs (open with :meth:`build`, which builds, resumes or reuses it)."""

    def __init__(self, path: Path, meta: dict[str, Any], seeds: np.ndarray, filled: np.ndarray,
                 arrays: dict[str, np.ndarray]):
        self.path, self.meta, self.seeds, self.filled, self.arrays = path, meta, seeds, filled, arrays

    # ------------------------------------------------------------------ build / open

    @classmethod
    def build(cls, path: str | os.PathLike, mode: CacheMode, loader: DataLoader,
              teacher: Callable[[torch.Tensor], dict[str, torch.Tensor]], *, epochs: int = 1,
              identity: dict[str, Any], dtype: Literal["float16", "float32"] = "float32",
              device: torch.device | str = "cpu", channels_last: bool = False) -> "TeacherCache":
        """Open the cache in ``path``, building what is missing.

        Args:
            path: the cache folder (one per fold and mode).
            mode: ``views`` or ``pool`` (for ``pool`` the loader comes from :func:`pool_loader`).
            loader: the student's training loader over a :class:`ViewKeyed` dataset.
            teacher: images -> ``{name: (B, ...) tensor}`` (logits, and the features a loss asks for).
            epochs: the student's epochs (``views``).
            identity: what the outputs depend on (teacher weights hash, augmentation settings, manifest hash,
                teacher precision, ...); a cache built for another identity is refused by name and rebuilt.
            dtype: storage precision; float16 halves the size and rounds the outputs unless the teacher
                already computes in 16 bits.
        """
        from .engine.trainer import move_to_device

        path = Path(path)
        if not isinstance(loader.dataset, ViewKeyed):
            raise TypeError("the teacher cache needs the loader's dataset wrapped in ViewKeyed")
        pool_views = loader.sampler.views if mode == "pool" else 0
        device = torch.device(device)
        state = rng_state()  # the build must not move the RNG streams the student's training draws from
        try:
            seeds, batches = _plan(mode, loader, epochs, pool_views)
            if not batches:
                raise TrainingError(f"teacher cache {path}: the loader yields no batch to cache")
            wanted = {"format": _FORMAT, "mode": mode, "n": int(seeds.shape[1]), "dtype": dtype,
                      "pool_views": pool_views, **{k: _plain(v) for k, v in identity.items()}}
            cache = cls._open_matching(path, wanted, seeds)
            pending = [b for b in batches if cache is None or not cache.filled[[s for s, _, _ in b],
                                                                                [i for _, i, _ in b]].all()]
            if cache is not None and not pending:
                log.info("teacher cache %s: warm (%d views)", path, int(cache.filled.sum()))
                return cache
            started = time.perf_counter()
            for keys_batch, batch in zip(pending, _fetch(loader, pending)):
                images = move_to_device(batch["image"], device, channels_last)
                outputs = teacher(images)
                if cache is None:
                    cache = cls._create(path, wanted, seeds, outputs)
                cache._write(keys_batch, outputs)
            cache._finish_build(time.perf_counter() - started, len(pending))
            return cache
        finally:
            set_rng_state(state)

    @classmethod
    def _open_matching(cls, path: Path, wanted: dict, seeds: np.ndarray) -> "TeacherCache | None":
        meta_path = path / "cache.json"
        if not path.exists():
            return None
        reasons = []
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            meta, reasons = None, [f"unreadable cache.json ({exc.__class__.__name__})"]
        if meta is not None:
            stored = meta.get("identity", {})
            reasons = [f"{key} ({_short(stored.get(key))} != {_short(wanted.get(key))})"
                       for key in sorted(set(stored) | set(wanted)) if stored.get(key) != wanted.get(key)]
            if not reasons:
                try:
                    cache = cls._load(path, meta)
                except (OSError, ValueError) as exc:
                    reasons = [f"unreadable arrays ({exc})"]
                else:
                    held = cache.seeds.shape[0]
                    if held < seeds.shape[0]:
                        reasons = [f"slots (holds {held} epochs, the student needs {seeds.shape[0]})"]
                    elif not np.array_equal(cache.seeds[:seeds.shape[0]], seeds):
                        reasons = ["augmentation stream (view seeds differ)"]
                    else:
                        return cache
        # Never used silently: say which setting differs, then rebuild from scratch.
        log.warning("teacher cache %s: refused, built for another %s; rebuilding", path, "; ".join(reasons))
        shutil.rmtree(path)
        return None

    @classmethod
    def _create(cls, path: Path, wanted: dict, seeds: np.ndarray, outputs: dict[str, torch.Tensor]) -> "TeacherCache":
        # Built in a sibling folder and renamed, so a folder named like the cache always has its cache.json.
        tmp = path.with_name(path.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        slots, n = seeds.shape
        np.save(tmp / "seeds.npy", seeds)
        np.lib.format.open_memmap(tmp / "filled.npy", mode="w+", dtype=np.uint8, shape=(slots, n)).flush()
        shapes = {}
        for name, value in outputs.items():
            shapes[name] = list(value.shape[1:])
            np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=wanted["dtype"],
                                      shape=(slots, n, *value.shape[1:])).flush()
        meta = {"identity": wanted, "outputs": shapes, "complete": False, "build_seconds": 0.0,
                "lossless": True, "max_rounding_error": 0.0}
        atomic_write_json(tmp / "cache.json", meta)
        os.replace(tmp, path)
        return cls._load(path, meta)

    @classmethod
    def _load(cls, path: Path, meta: dict) -> "TeacherCache":
        seeds = np.load(path / "seeds.npy", mmap_mode="r")
        filled = np.load(path / "filled.npy", mmap_mode="r+")
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r+") for name in meta["outputs"]}
        return cls(path, meta, seeds, filled, arrays)

    def _write(self, keys: Sequence[tuple[int, int, int]], outputs: dict[str, torch.Tensor]) -> None:
        slots = np.array([s for s, _, _ in keys])
        index = np.array([i for _, i, _ in keys])
        if set(outputs) != set(self.arrays):
            raise TrainingError(f"teacher cache {self.path}: teacher gave outputs {sorted(outputs)}, "
                                f"the cache holds {sorted(self.arrays)}")
        for name, value in outputs.items():
            values = value.detach().float().cpu().numpy()
            stored = values.astype(self.arrays[name].dtype)
            if not np.isfinite(stored).all():
                raise TrainingError(f"teacher cache {self.path}: non-finite {name} in {self.meta['identity']['dtype']}"
                                    " (outside float16's range?); use student.teacher_cache_dtype float32")
            error = float(np.abs(stored.astype(np.float32) - values).max()) if values.size else 0.0
            if error > self.meta["max_rounding_error"]:
                self.meta.update(lossless=False, max_rounding_error=error)
                atomic_write_json(self.path / "cache.json", self.meta)  # kept if the build is killed before its end
            self.arrays[name][slots, index] = stored
        # Outputs first, then the flags: a process killed in between recomputes these views, never reads zeros.
        self.filled[slots, index] = 1

    def _finish_build(self, seconds: float, batches: int) -> None:
        for array in (*self.arrays.values(), self.filled):
            array.flush()
        self.meta["build_seconds"] = round(self.meta.get("build_seconds", 0.0) + seconds, 3)
        self.meta["complete"] = True
        atomic_write_json(self.path / "cache.json", self.meta)
        if not self.meta["lossless"]:
            log.warning("teacher cache %s: stored in %s, teacher outputs rounded by up to %.3g", self.path,
                        self.meta["identity"]["dtype"], self.meta["max_rounding_error"])
        log.info("teacher cache %s: built %d batches in %.1f s", self.path, batches, seconds)

    # ------------------------------------------------------------------ use

    @property
    def build_seconds(self) -> float:
        return float(self.meta.get("build_seconds", 0.0))

    def lookup(self, batch: dict) -> dict[str, torch.Tensor]:
        """The cached outputs of ``batch``'s views (``"index"`` and ``"view"`` from :class:`ViewKeyed`), as float32.

        A view that is not in the cache is an error, never a silent recomputation with other inputs.
        """
        index = batch["index"].cpu().numpy()
        view = batch["view"].cpu().numpy()
        matches = self.seeds[:, index] == view[None, :]
        slot = matches.argmax(axis=0)
        found = matches[slot, np.arange(len(index))] & (self.filled[slot, index] == 1)
        if not found.all():
            missing = int((~found).sum())
            raise TrainingError(f"teacher cache {self.path}: {missing} views of this batch are not in the cache "
                                "(another augmentation stream?); remove the folder to rebuild it")
        device = batch["image"].device
        return {name: torch.from_numpy(np.asarray(array[slot, index], dtype=np.float32)).to(device)
                for name, array in self.arrays.items()}


def feature_output(output: str, path: str) -> str:
    """Name under which the cache stores feature ``path`` of the teacher cached as ``output``."""
    return f"{output}.feature.{path}"


class CachedTeacher:
    """Stands in for a frozen teacher: ``cached(batch)`` returns the teacher's ``output`` for the batch's views.

    With ``features`` (the paths of a :class:`~kdcore.teacher.FrozenTeacher` built with ``features=``), the call
    also sets ``cached.features`` to that batch's cached features, as the live teacher does.
    """

    def __init__(self, cache: TeacherCache, output: str = "logits", features: Sequence[str] = ()):
        self.cache, self.output = cache, output
        self.feature_paths = tuple(features)
        self.features: dict[str, torch.Tensor] = {}

    def __call__(self, batch: dict) -> torch.Tensor:
        found = self.cache.lookup(batch)
        if self.feature_paths:
            self.features = {path: found[feature_output(self.output, path)] for path in self.feature_paths}
        return found[self.output]


def _fetch(loader: DataLoader, batches: list[list]) -> Iterator[dict]:
    """Load ``batches`` of (slot, index, seed) through ``loader``'s dataset, workers and collate function."""
    keyed = [[(index, seed) for _, index, seed in batch] for batch in batches]
    options = {k: v for k, v in _loader_options(loader).items() if k != "persistent_workers"}
    return iter(DataLoader(loader.dataset, batch_sampler=keyed, **options))


def cached_teacher(mode: CacheMode, folder: str | os.PathLike, loader: DataLoader, teacher: Any, *,
                   weights: str | os.PathLike | Mapping[str, str | os.PathLike], identity: dict[str, Any], epochs: int,
                   pool_views: int = 8, dtype: Literal["auto", "float16", "float32"] = "auto",
                   device: torch.device | str = "cpu",
                   channels_last: bool = False) -> tuple[Any, DataLoader, TeacherCache]:
    """Swap a student's online teacher(s) for the cache: ``(cached teacher(s), the student's loader, the cache)``.

    Args:
        mode: ``views`` (exact) or ``pool`` (``pool_views`` views per image, an approximation).
        folder: the fold's folder; the cache lives in ``folder/teacher_cache/<mode>``.
        loader: the student's training loader (a :class:`SeededSampler`); the returned loader replaces it.
        teacher: a :class:`~kdcore.teacher.FrozenTeacher` (its outputs are cached as ``logits``), or a mapping
            ``{name: FrozenTeacher}`` (each cached under its name; a mapping of :class:`CachedTeacher` comes back).
            A teacher built with ``features=`` has those features cached too (one array per feature: mind the
            size of a feature map times the views), and its :class:`CachedTeacher` sets ``features``.
        weights: the teacher's weights file (a mapping of them for several teachers), hashed into the identity.
        identity: the rest of what the outputs depend on (augmentation settings, manifest hash, fold, ...).
        dtype: ``auto`` stores float16 when the teachers run under 16-bit autocast (lossless), else float32.
    """
    several = isinstance(teacher, Mapping)
    teachers = dict(teacher) if several else {"logits": teacher}
    files = dict(weights) if isinstance(weights, Mapping) else {"logits": weights}
    if set(files) != set(teachers):
        raise ValueError(f"weights for {sorted(files)}, teachers {sorted(teachers)}")
    keyed = _rebuilt(loader, dataset=ViewKeyed(loader.dataset))
    if mode == "pool":
        keyed = pool_loader(keyed, pool_views, derive_seed(loader.sampler.seed, "pool"))
    amps = {getattr(t, "amp_dtype", None) for t in teachers.values()}
    if dtype == "auto":
        dtype = "float16" if amps <= {torch.float16, torch.bfloat16} else "float32"
    hashes = {name: file_sha256(path) for name, path in files.items()}
    identity = {"teacher_sha256": hashes if several else hashes["logits"],
                "teacher_precision": sorted(str(a or torch.float32) for a in amps),
                "channels_last": channels_last, **identity}
    paths = {name: tuple(getattr(t, "feature_paths", ())) for name, t in teachers.items()}
    if any(paths.values()):  # only then: the identity of a logits-only cache is unchanged
        identity["teacher_features"] = {name: list(p) for name, p in paths.items()}

    def outputs(images: torch.Tensor) -> dict[str, torch.Tensor]:
        found = {}
        for name, t in teachers.items():
            found[name] = t(images)
            found.update({feature_output(name, path): t.features[path] for path in paths[name]})
        return found

    cache = TeacherCache.build(Path(folder) / "teacher_cache" / mode, mode, keyed, outputs, epochs=epochs,
                               identity=identity, dtype=dtype, device=device, channels_last=channels_last)
    if mode == "pool":
        log.info("teacher cache: pool of %d views per image (FKD-style), an approximation of online distillation",
                 pool_views)
    cached = ({name: CachedTeacher(cache, name, paths[name]) for name in teachers} if several
              else CachedTeacher(cache, features=paths["logits"]))
    return cached, keyed, cache


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
