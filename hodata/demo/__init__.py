"""Synthetic look-alike datasets in the real datasets' on-disk layouts (``hodata demo --layout ...``).

Each layout module has ``write(out, frames=..., seed=...) -> {"root": ..., "build_command": ...}``; the
shared scene painter is :mod:`hodata.demo.blobs`. Nothing here is real data and nothing is downloaded.
"""
