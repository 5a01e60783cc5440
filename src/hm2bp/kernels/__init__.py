"""Optional compiled kernels with the same results as the pure-torch loops in ``hm2bp.functional``.

Set ``HM2BP_BACKEND=torch`` to force the pure-torch path.
"""
