"""Mixing task manifests into one weighted training set (Lhotse Shar) with per-task dev/test sets."""
