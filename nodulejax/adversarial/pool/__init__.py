"""The precomputed adversarial augmentation pool (Section 4): `build` computes it against the
attacked FPR, `store` holds its on-disk format (shards, manifest) and the reader."""

from nodulejax.adversarial.pool.build import KIND_ID, build_pool, fingerprint, plan
from nodulejax.adversarial.pool.store import (
    MANIFEST,
    POOL_KINDS,
    PoolReader,
    read_manifest,
    shard_path,
    write_manifest,
    write_shard,
)

__all__ = ["KIND_ID", "build_pool", "fingerprint", "plan", "MANIFEST", "POOL_KINDS",
           "PoolReader", "read_manifest", "shard_path", "write_manifest", "write_shard"]
