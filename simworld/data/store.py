"""An append-only episode store on disk: one safetensors file per episode plus ``meta.json``.

Layout::

    <root>/meta.json                     StoreMeta (world, action space spec, frame size, fps, ...)
    <root>/.lock                         fcntl lock serialising appends across processes
    <root>/episodes/000000.safetensors   frames, actions, rewards, terminated, truncated, state/<key>;
                                         the episode info JSON in the safetensors metadata

Every file is written to a hidden temp name, fsynced and renamed, so a crash at any moment leaves
the store readable with the interrupted episode simply absent. Episode files are never modified
after they appear, which is what makes caching their headers and open handles safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from simworld.data.atomic import atomic_path, atomic_write_bytes
from simworld.data.episode import Episode
from simworld.data.spaces import action_dtype, check_action_array, space_to_spec, spec_to_space

FORMAT_VERSION = 1
EPISODE_FORMAT = "simworld-episode-1"
_EPISODE_RE = re.compile(r"^(\d{6,})\.safetensors$")
_TEMP_MARK = ".tmp-"
_MAX_OPEN_HANDLES = 32
_MAX_HEADER_BYTES = 100_000_000
_ST_DTYPES = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
}


class _Handle(NamedTuple):
    file: Any  # safetensors safe_open object (memory-mapped)
    metadata: dict[str, str]
    state_names: list[str]


class StoreMismatchError(ValueError):
    """A store's metadata, or an episode, does not match what the store holds."""


class StoreCorruptError(ValueError):
    """A file in the store cannot be parsed (damaged, truncated or from another format version)."""


# Fields that decide whether data can share a store; the rest (fps, world_params, extra) is
# descriptive and the existing store's values win.
_COMPATIBILITY_FIELDS = ("world_id", "frame_size", "action_space", "state_keys")


@dataclass
class StoreMeta:
    """What every episode in a store shares.

    Attributes:
        world_id: The environment id the episodes come from (e.g. ``"simworld/Balls-v0"``).
        world_params: Parameters the world was built with (JSON).
        action_space: Spec from :func:`~simworld.data.spaces.space_to_spec`; a gymnasium space is
            accepted and converted.
        frame_size: ``(H, W)`` of every frame.
        fps: Frames per second, for videos.
        state_keys: Names of the true-state arrays each collected episode carries (may be empty).
        format_version: On-disk format version; only :data:`FORMAT_VERSION` is readable.
        extra: Free-form JSON for anything else.
    """

    world_id: str
    world_params: dict[str, Any]
    action_space: dict[str, Any]
    frame_size: tuple[int, int]
    fps: float
    state_keys: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.action_space, gym.Space):
            self.action_space = space_to_spec(self.action_space)
        # Round-trip through the space so equal spaces give equal specs when comparing metas.
        self.action_space = space_to_spec(spec_to_space(self.action_space))
        if len(self.frame_size) != 2:
            raise ValueError(f"frame_size must be (H, W), got {self.frame_size!r}")
        self.frame_size = (int(self.frame_size[0]), int(self.frame_size[1]))
        self.fps = float(self.fps)
        self.state_keys = [str(k) for k in self.state_keys]

    @property
    def space(self) -> gym.Space:
        """The action space as a gymnasium space."""
        return spec_to_space(self.action_space)

    def to_json(self) -> str:
        """Serialise to JSON text (what ``meta.json`` holds)."""
        d = asdict(self)
        d["frame_size"] = list(self.frame_size)
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StoreMeta:
        """Parse JSON text written by :meth:`to_json`.

        Raises:
            ValueError: If the text is not JSON, lacks a field, or has another format version.
        """
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        version = d.get("format_version", None)
        if version != FORMAT_VERSION:
            raise ValueError(f"format_version is {version!r}, this code reads version {FORMAT_VERSION}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - d.keys())
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid field value ({e})") from None

    def mismatches(self, other: StoreMeta) -> list[str]:
        """Describe each compatibility field (world, frame size, action space, state keys) that differs."""
        return [
            f"{name}: store has {getattr(self, name)!r}, got {getattr(other, name)!r}"
            for name in _COMPATIBILITY_FIELDS
            if getattr(self, name) != getattr(other, name)
        ]


class EpisodeStore:
    """Append-only episode store on disk; see the module docstring for the layout.

    Reading is safe from many processes at once (including torch DataLoader workers, forked or
    spawned); appends from several processes are serialised by a file lock.

    Args:
        root: Directory of an existing store (use :meth:`create` for a new one).

    Raises:
        FileNotFoundError: If ``root`` or ``root/meta.json`` does not exist.
        StoreCorruptError: If ``meta.json`` cannot be parsed.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no episode store at {self.root}: directory does not exist")
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"no episode store at {self.root}: {meta_path} is missing (create one with EpisodeStore.create)"
            )
        try:
            self.meta = StoreMeta.from_json(meta_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise StoreCorruptError(f"{meta_path}: {e}") from None
        self.action_space = self.meta.space
        self.episodes_dir = self.root / "episodes"
        self.episodes_dir.mkdir(exist_ok=True)
        self._ids: list[int] = []
        self._lengths: dict[int, int] = {}
        self._handles_pid = -1
        self._handles: OrderedDict[int, _Handle] = OrderedDict()
        self.refresh()

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike) -> EpisodeStore:
        """Open an existing store (same as ``EpisodeStore(root)``)."""
        return cls(root)

    @classmethod
    def create(cls, root: str | os.PathLike, meta: StoreMeta, exist_ok: bool = True) -> EpisodeStore:
        """Create a store, or open an existing one whose metadata is compatible.

        Args:
            root: Directory for the store; created with its parents if needed.
            meta: What the episodes share.
            exist_ok: If False, an existing store raises FileExistsError.

        Returns:
            The opened store. An existing store keeps its own ``meta.json``.

        Raises:
            StoreMismatchError: If a store exists whose world_id, frame_size, action_space or
                state_keys differ; the message names each field with both values.
            StoreCorruptError: If an existing ``meta.json`` cannot be parsed.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        meta_path = root / "meta.json"
        # Under the append lock so that two collectors creating the same store agree on one meta.
        with _locked(root):
            if not meta_path.exists():
                (root / "episodes").mkdir(exist_ok=True)
                atomic_write_bytes(meta_path, meta.to_json().encode())
                return cls(root)
        if not exist_ok:
            raise FileExistsError(f"an episode store already exists at {root}")
        store = cls(root)
        diffs = store.meta.mismatches(meta)
        if diffs:
            raise StoreMismatchError(
                f"episode store {root} does not match the requested meta: " + "; ".join(diffs)
            )
        return store

    # ---- writing ---------------------------------------------------------------------------

    def append(self, episode: Episode) -> int:
        """Validate ``episode`` against the store and write it atomically.

        Episodes must carry exactly the store's ``state_keys``, except imported ones, which carry
        no states at all and say so with ``info["source"] == "video"``.

        Args:
            episode: The episode to add. Actions are stored in the space's dtype (int64 for
                Discrete, the Box dtype for Box).

        Returns:
            The new episode id (1 + the largest existing id; 0 for the first).

        Raises:
            ValueError: If the episode is malformed or its actions are not in the action space.
            StoreMismatchError: If its frame size or state keys differ from the store's.
        """
        episode.validate()
        if episode.frame_size != self.meta.frame_size:
            raise StoreMismatchError(
                f"episode frame size (H, W) = {episode.frame_size} but store {self.root} "
                f"holds {self.meta.frame_size}"
            )
        check_action_array(episode.actions, self.action_space, episode.num_steps)
        keys = sorted(episode.states)
        stateless_import = not keys and episode.info.get("source") == "video"
        if keys != sorted(self.meta.state_keys) and not stateless_import:
            raise StoreMismatchError(
                f"episode state keys {keys} but store {self.root} expects {sorted(self.meta.state_keys)} "
                "(only episodes with info['source'] == 'video' may omit states)"
            )
        tensors = {
            "frames": episode.frames,
            "actions": episode.actions.astype(action_dtype(self.action_space), copy=False),
            "rewards": episode.rewards,
            "terminated": episode.terminated,
            "truncated": episode.truncated,
        }
        tensors.update({f"state/{k}": v for k, v in episode.states.items()})
        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        metadata = {"format": EPISODE_FORMAT, "info": json.dumps(episode.info)}

        with _locked(self.root):
            existing = self._scan_ids()
            self._remove_stale_temps()
            eid = existing[-1] + 1 if existing else 0
            path = self.episode_path(eid)
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata=metadata)
        self._ids = [*existing, eid]
        self._lengths[eid] = episode.num_steps
        return eid

    def _remove_stale_temps(self) -> None:
        # Called under the lock: no live writer can own a temp file now, so any left is from a crash.
        for p in self.episodes_dir.iterdir():
            if p.name.startswith(".") and _TEMP_MARK in p.name:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    # ---- listing ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-scan the episodes directory (to see episodes appended by other processes)."""
        self._ids = self._scan_ids()
        known = set(self._ids)
        self._lengths = {e: t for e, t in self._lengths.items() if e in known}

    def _scan_ids(self) -> list[int]:
        ids = []
        for name in os.listdir(self.episodes_dir):
            m = _EPISODE_RE.match(name)
            if m:
                ids.append(int(m.group(1)))
        return sorted(ids)

    def episode_path(self, eid: int) -> Path:
        """Path of the file holding episode ``eid`` (it may not exist)."""
        return self.episodes_dir / f"{eid:06d}.safetensors"

    @property
    def episode_ids(self) -> list[int]:
        """Sorted ids of the episodes (as of the last append or :meth:`refresh`)."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.root)!r}, world_id={self.meta.world_id!r}, episodes={len(self)})"

    @property
    def lengths(self) -> dict[int, int]:
        """``{episode id: num_steps}``, read from the safetensors headers only and cached."""
        for eid in self._ids:
            if eid not in self._lengths:
                self._lengths[eid] = self._read_num_steps(eid)
        return {eid: self._lengths[eid] for eid in self._ids}

    @property
    def num_frames(self) -> int:
        """Total number of frames over all episodes (each episode has num_steps + 1)."""
        return sum(t + 1 for t in self.lengths.values())

    def num_steps(self, eid: int) -> int:
        """Number of steps of one episode (header read only)."""
        self._check_id(eid)
        if eid not in self._lengths:
            self._lengths[eid] = self._read_num_steps(eid)
        return self._lengths[eid]

    def read_array(self, eid: int, name: str) -> np.ndarray:
        """One whole array of an episode (``"rewards"``, ``"actions"``, ``"state/<key>"``, ...) without
        reading its frames."""
        return self._slice(
            eid, name, 0, self.num_steps(eid) + (name == "frames" or name.startswith("state/"))
        )

    def bytes_on_disk(self) -> int:
        """Total size in bytes of every file under the store root."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def _read_num_steps(self, eid: int) -> int:
        path = self.episode_path(eid)
        header = _read_header(path)
        try:
            T = int(header["rewards"]["shape"][0])
            if int(header["frames"]["shape"][0]) != T + 1:
                raise ValueError("frames and rewards lengths disagree")
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise StoreCorruptError(f"{path}: not a simworld episode ({e})") from None
        return T

    def _check_id(self, eid: int) -> None:
        if eid not in self._lengths and eid not in self._ids:
            self.refresh()  # another process may have appended it
            if eid not in self._ids:
                lo_hi = f"ids {self._ids[0]}..{self._ids[-1]}" if self._ids else "no episodes"
                raise IndexError(f"episode {eid} not in store {self.root} ({len(self)} episodes, {lo_hi})")

    # ---- reading ---------------------------------------------------------------------------

    def _handle(self, eid: int) -> _Handle:
        # safetensors handles memory-map the file; a forked worker must not share its parent's,
        # so the cache belongs to one process id.
        pid = os.getpid()
        if pid != self._handles_pid:
            self._handles = OrderedDict()
            self._handles_pid = pid
        entry = self._handles.get(eid)
        if entry is not None:
            self._handles.move_to_end(eid)
            return entry
        path = self.episode_path(eid)
        try:
            handle = safe_open(str(path), framework="np")
            names = set(handle.keys())
            metadata = handle.metadata() or {}
        except (SafetensorError, OSError) as e:
            raise StoreCorruptError(f"{path}: cannot read episode file ({e})") from None
        missing = {"frames", "actions", "rewards", "terminated", "truncated"} - names
        if missing:
            raise StoreCorruptError(f"{path}: not a simworld episode, missing tensor(s) {sorted(missing)}")
        entry = _Handle(handle, metadata, sorted(n for n in names if n.startswith("state/")))
        self._handles[eid] = entry
        if len(self._handles) > _MAX_OPEN_HANDLES:
            self._handles.popitem(last=False)
        return entry

    def _slice(self, eid: int, name: str, a: int, b: int) -> np.ndarray:
        handle = self._handle(eid).file
        try:
            sl = handle.get_slice(name)
            if b <= a:
                # safetensors rejects empty slices; build the empty array ourselves.
                shape = sl.get_shape()
                return np.zeros((0, *shape[1:]), dtype=_ST_DTYPES[sl.get_dtype()])
            return sl[a:b]
        except SafetensorError as e:
            raise StoreCorruptError(f"{self.episode_path(eid)}: cannot read tensor {name!r} ({e})") from None

    def load(self, eid: int) -> Episode:
        """Load a whole episode.

        Raises:
            IndexError: If there is no episode ``eid``.
            StoreCorruptError: If its file is damaged.
        """
        T = self.num_steps(eid)
        entry = self._handle(eid)
        try:
            info = json.loads(entry.metadata.get("info", "{}"))
        except json.JSONDecodeError as e:
            raise StoreCorruptError(f"{self.episode_path(eid)}: info metadata is not JSON ({e})") from None
        return Episode(
            frames=self._slice(eid, "frames", 0, T + 1),
            actions=self._slice(eid, "actions", 0, T),
            rewards=self._slice(eid, "rewards", 0, T),
            terminated=self._slice(eid, "terminated", 0, T),
            truncated=self._slice(eid, "truncated", 0, T),
            states={n[len("state/") :]: self._slice(eid, n, 0, T + 1) for n in entry.state_names},
            info=info,
        )

    def read_window(self, eid: int, start: int, length: int) -> dict[str, Any]:
        """Read ``length`` consecutive frames of one episode and the steps between them.

        Only the requested slice is read from the memory-mapped file.

        Args:
            eid: Episode id.
            start: Index of the first frame.
            length: Number of frames ``L`` (>= 1); ``start + L <= T + 1``.

        Returns:
            ``frames (L, H, W, 3)``, ``actions (L-1, ...)``, ``rewards (L-1,)``,
            ``terminated (L-1,)``, ``truncated (L-1,)`` and ``states {key: (L, ...)}`` (empty for
            imported episodes).

        Raises:
            IndexError: If the episode does not exist or the window does not fit in it.
            StoreCorruptError: If the episode file is damaged.
        """
        T = self.num_steps(eid)
        if length < 1 or start < 0 or start + length > T + 1:
            raise IndexError(
                f"window start={start} length={length} does not fit episode {eid} of {T + 1} frames "
                f"(need length >= 1, start >= 0 and start + length <= {T + 1})"
            )
        a, b = start, start + length
        state_names = self._handle(eid).state_names
        return {
            "frames": self._slice(eid, "frames", a, b),
            "actions": self._slice(eid, "actions", a, b - 1),
            "rewards": self._slice(eid, "rewards", a, b - 1),
            "terminated": self._slice(eid, "terminated", a, b - 1),
            "truncated": self._slice(eid, "truncated", a, b - 1),
            "states": {n[len("state/") :]: self._slice(eid, n, a, b) for n in state_names},
        }

    def info(self, eid: int) -> dict[str, Any]:
        """The ``info`` dict of one episode, without reading its arrays."""
        self._check_id(eid)
        return json.loads(self._handle(eid).metadata.get("info", "{}"))

    def __getstate__(self) -> dict[str, Any]:
        # Open handles cannot be pickled (spawned DataLoader workers); workers reopen lazily.
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        state["_handles_pid"] = -1
        return state

    # ---- splitting -------------------------------------------------------------------------

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
        """Split episode ids into train and validation sets.

        Each episode's side is decided by a hash of ``(seed, id)``, so appending episodes never
        moves an existing one. With >= 2 episodes and ``0 < val_fraction < 1`` both sides are
        non-empty: if no episode hashes into validation, the one with the lowest hash is used
        (the only case where a later append can move an episode, to train).

        Args:
            val_fraction: Expected fraction of episodes in validation.
            seed: Different seeds give independent splits.

        Returns:
            ``(train_ids, val_ids)``, each sorted.
        """
        if not 0.0 <= val_fraction <= 1.0:
            raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
        u = {eid: _unit_hash(seed, eid) for eid in self._ids}
        val = {eid for eid, x in u.items() if x < val_fraction}
        if len(u) >= 2 and 0.0 < val_fraction < 1.0:
            if not val:
                val = {min(u, key=u.__getitem__)}
            elif len(val) == len(u):
                val.discard(max(u, key=u.__getitem__))
        return [e for e in self._ids if e not in val], sorted(val)


def action_stats(store: EpisodeStore, episode_ids: list[int] | None = None) -> dict[str, Any]:
    """How the actions of a store's episodes (all, or ``episode_ids``) are spread.

    ``repeat_share`` is the share of steps (after each episode's first) whose action equals the
    step before's: near 1, the data barely shows what a change of action does, which a world model
    needs to learn the action's effect. ``counts`` is each action's number of steps (Discrete only,
    else None). Reads the action arrays only, never the frames.
    """
    ids = store.episode_ids if episode_ids is None else list(episode_ids)
    space = store.meta.space
    n_actions = int(space.n) if isinstance(space, gym.spaces.Discrete) else None
    counts = np.zeros(n_actions or 0, dtype=np.int64)
    steps = pairs = repeats = 0
    for eid in ids:
        a = store.read_array(eid, "actions")
        a = a.reshape(len(a), int(np.prod(a.shape[1:])))
        steps += len(a)
        pairs += max(len(a) - 1, 0)
        repeats += int(np.all(a[1:] == a[:-1], axis=1).sum())
        if n_actions is not None:
            counts += np.bincount(a[:, 0] - space.start, minlength=n_actions)[:n_actions]
    return {
        "steps": steps,
        "repeat_share": repeats / pairs if pairs else None,
        "counts": counts.tolist() if n_actions is not None else None,
    }


def _unit_hash(seed: int, eid: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{eid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def _read_header(path: Path) -> dict[str, Any]:
    """Parse a safetensors header (8-byte length + JSON) without mapping the data."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError(f"file is {size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, _MAX_HEADER_BYTES):
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end != size:
            raise ValueError(f"file is {size} bytes but its header describes {8 + n + end} (truncated?)")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError) as e:
        raise StoreCorruptError(f"{path}: corrupt episode file ({e})") from None
    return header


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock (and a killed process's lock is released too)
