"""Episode store, training windows and video I/O.

Collected experience lives in an :class:`EpisodeStore` (one safetensors file per episode);
:class:`WindowDataset` / :func:`sample_windows` cut it into fixed-length training windows;
``video`` turns episodes into mp4 and recorded videos (plus actions) into episodes.
"""

from simworld.data.episode import Episode
from simworld.data.spaces import action_dtype, check_action_array, space_to_spec, spec_to_space
from simworld.data.store import (
    FORMAT_VERSION,
    EpisodeStore,
    StoreCorruptError,
    StoreMeta,
    StoreMismatchError,
)
from simworld.data.video import (
    VideoReadError,
    export_episode,
    import_video,
    load_actions,
    psnr,
    read_video,
    resize_frames,
    write_video,
)
from simworld.data.windows import WindowDataset, collate_windows, measure_store, sample_windows

__all__ = [
    "FORMAT_VERSION",
    "Episode",
    "EpisodeStore",
    "StoreCorruptError",
    "StoreMeta",
    "StoreMismatchError",
    "VideoReadError",
    "WindowDataset",
    "action_dtype",
    "check_action_array",
    "collate_windows",
    "export_episode",
    "import_video",
    "load_actions",
    "measure_store",
    "psnr",
    "read_video",
    "resize_frames",
    "sample_windows",
    "space_to_spec",
    "spec_to_space",
    "write_video",
]
