"""Datasets: the CUB-200-2011 reader, the synthetic-birds generator, part names and subsets."""
