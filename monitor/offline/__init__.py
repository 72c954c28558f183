"""The offline companion: validate a model before launch and analyse its A/B test.

It reads the joined table that `monitor replay --joined` writes, and shares the decision spec and
the statistics of the engine, so value and KPIs mean the same offline and online. The engine
never imports it (import-linter checks).
"""
