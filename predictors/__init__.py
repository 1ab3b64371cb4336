"""nasplat's accuracy and latency predictors, encoders and zero-cost proxies (package ``nasplat_predictors``).

Importing the package registers, through :mod:`nasplat.registry`:

- encoders ``onehot``, ``costs`` (any family), ``path``, ``pathstats``, ``graph`` (families whose
  ``describe`` gives an edge graph, such as cells; :mod:`.encoders`) and ``zc`` (:mod:`.zero_cost`);
- predictors ``gbdt``, ``mlp``, ``mlp_rank``, ``gp`` (:mod:`.models`), ``auto`` and ``auto_zc``
  (:mod:`.auto`), and the zero-cost proxies as predictors ``zc_params``, ``zc_macs``, ``zc_synflow``,
  ``zc_grad_norm``, ``zc_snip``, ``zc_naswot`` (:mod:`.zero_cost`);
- the estimator ``zero_cost`` (:mod:`.zc_estimator`): every zero-cost proxy of :mod:`.zero_cost` (the six above
  and flops, l2_norm, jacov, fisher, grasp, zen, meco and AZ-NAS's components) as metrics ``zc_<proxy>``, and
  their AZ-NAS-style rank combination as metric ``zero_cost``.
"""

from __future__ import annotations

from . import auto, encoders, models, zc_estimator, zero_cost

__all__ = ["auto", "encoders", "models", "zc_estimator", "zero_cost"]
