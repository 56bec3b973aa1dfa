"""Evaluation utilities (FID Inception network, Frechet distance, ...)."""
