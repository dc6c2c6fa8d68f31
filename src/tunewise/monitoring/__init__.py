"""Monitoring a deployed candidate: drift and degradation checks over the request log.

``drift.py`` holds the pure statistical checks and ``arms.py`` the A/B comparisons; ``traffic.py``
reads the request log; ``monitor.py`` puts traffic and reference data through the checks;
``export.py`` writes the feedback-labelled requests and the task file that re-runs the decision on them.
"""
