"""What a run is, without JAX: the typed config, its keys and identity, studies and their presets.

``values`` (``ConfigError``, value types, parsing), ``sections`` (``RunConfig`` and its parts), ``keys`` (dotted keys,
dicts), ``env`` (the compute overrides from the environment), ``identity`` (checkpoint identity, run names, the
keys that change no number), ``study`` (axes) and ``presets`` (``STUDIES``). They import only ``jaxres.catalog``
and one another (tests/test_layout.py). ``jaxres.config`` is their public face: import from there.
"""
