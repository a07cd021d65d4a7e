"""Pure evaluation: settings and answers in, decisions and impressions out. No threads, no
sockets: the evaluator contract (``outcome``), what each flag needs (``flag_index``), VWO's
segment DSL (``segments``), native rules and bucketing (``native``), impressions as data
(``impressions``), the decision caches (``caches``) and process-wide overrides (``overrides``)."""
