"""Training: batches straight from uint8 shards, the training loop, search, distributed runs."""
