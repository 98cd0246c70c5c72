"""Process-level plumbing under everything else: host devices and batch sharding, worker
processes, atomic files, fixed-shape batching, named PRNG streams, config tools and Orbax
checkpoints."""

from __future__ import annotations

from nodulejax.runtime import (
           batching,
           checkpoint,
           cli,
           compilation,
           config_tools,
           devices,
           files,
           keys,
           processes,
           sharding,
)
from nodulejax.runtime.batching import map_batches, pad_rows
from nodulejax.runtime.checkpoint import (
           ModelCheckpoints,
           Restored,
           check_config,
           load_params,
           model_dir,
           require_model,
           restore_latest,
           trained_models,
)
from nodulejax.runtime.cli import (
           USER_ERRORS,
           check_overrides,
           config_spec,
           help_text,
           nearest_field,
           quiet_library_logs,
           run_main,
)
from nodulejax.runtime.compilation import cache_dir, configure_compilation_cache
from nodulejax.runtime.config_tools import (
           MISSING,
           config_diff,
           config_to_dict,
           fingerprint,
           flatten,
           load_config,
           matches,
           nested_diff,
           select,
           tree_digest,
)
from nodulejax.runtime.devices import (
           DATA_AXIS,
           batch_mesh,
           batch_sharding,
           configure_cpu_devices,
           configure_from,
           devices_for_batch,
           gather,
           make_mesh,
           mesh_for,
           put_batch,
           replicate,
           replicated,
)
from nodulejax.runtime.files import atomic_savez, atomic_write, atomic_write_json, atomic_write_text
from nodulejax.runtime.keys import STREAMS, decode_key, encode_key, item_keys, stream_key
from nodulejax.runtime.processes import spawn_map
from nodulejax.runtime.sharding import initialize_distributed, process_share, shard_batch

__all__ = ["batching", "map_batches", "pad_rows", "config_tools", "config_to_dict", "flatten",
           "matches", "select", "config_diff", "nested_diff", "fingerprint", "tree_digest",
           "load_config", "MISSING", "devices", "DATA_AXIS", "configure_cpu_devices",
           "configure_from", "make_mesh", "replicated", "batch_sharding", "devices_for_batch",
           "batch_mesh", "mesh_for", "put_batch", "replicate", "gather", "checkpoint", "model_dir",
           "check_config", "encode_key", "decode_key", "Restored", "ModelCheckpoints",
           "restore_latest", "load_params", "trained_models", "require_model", "cli", "run_main",
           "nearest_field", "check_overrides", "config_spec", "quiet_library_logs", "help_text",
           "USER_ERRORS", "compilation", "cache_dir", "configure_compilation_cache", "files",
           "atomic_write", "atomic_write_text", "atomic_write_json",
           "atomic_savez", "keys", "STREAMS", "item_keys", "stream_key", "processes", "spawn_map",
           "sharding", "initialize_distributed", "process_share", "shard_batch"]
