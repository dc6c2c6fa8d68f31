"""The ladder: which rungs exist, in which order they are climbed, and the climb itself.

* ``catalogue.py`` - the built-in rungs, the default ladder per task kind, resolving named rungs;
* ``policy.py`` - pure: the next step (run, skip, escalate, stop) from what the rungs measured and the budget,
  and early rejection on nested test subsets;
* ``planning.py`` - how the policy sees rungs, results, prices, budgets and deadlines;
* ``context.py`` - what the rungs of one run share (spec, splits, store, the model, embeddings);
* ``attempt.py`` - one rung scored: prepare, screen, evaluate, measure stability;
* ``lifecycle.py`` - a rung's record in the run store: reused, or started then finished, skipped or failed;
* ``walk.py`` - the climb: a fixed list, or the policy's walk, and the paired comparisons against the best rung.

The modules are imported where used (``tunewise.ladder.walk`` and so on), so importing the policy's types
never loads the evaluator.
"""
