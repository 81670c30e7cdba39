"""jaxres: controlled comparisons of plain and residual convolutional networks in JAX/Flax."""
from jaxres.cpu import apply_cpu_fast_path as _apply_cpu_fast_path

_apply_cpu_fast_path()  # before anything in jaxres starts JAX's backend
