"""Shards and rows: the manifest (row ids, byte offsets, key hashes), the tar reader, the shard
writer, and the decoding of a sample's text. Part of the core: imports neither loaders nor train."""
