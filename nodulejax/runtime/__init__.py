"""Process-level plumbing under everything else: host devices and batch sharding, worker
processes, atomic files, fixed-shape batching, named PRNG streams, config tools and Orbax
checkpoints."""
