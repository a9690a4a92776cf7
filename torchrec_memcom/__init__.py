"""torchrec_memcom."""
