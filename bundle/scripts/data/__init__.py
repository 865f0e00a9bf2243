"""Training and evaluation data: the datalist reader, Hermes transforms, batching and dataset-weighted sampling."""
