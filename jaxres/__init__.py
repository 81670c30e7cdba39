"""jaxres: controlled comparisons of plain and residual convolutional networks in JAX/Flax."""
from jaxres.cpu import apply_cpu_fast_path as _apply_cpu_fast_path
from jaxres.cpu import keep_freed_memory as _keep_freed_memory

_apply_cpu_fast_path()  # before anything in jaxres starts JAX's backend
_keep_freed_memory()
