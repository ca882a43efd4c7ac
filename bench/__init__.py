"""aiwebengine's benchmark suite: ``python -m bench`` (or ``nox -s bench``).

Every benchmark compares the engine with a baseline measured in the same run, against servers
running in their own process groups on 127.0.0.1, and writes ``docs/performance.md``.

Layout: ``_suite`` (the whole run), ``_measure`` (one measurement, comparisons, settings),
``_runaways`` (benchmark 3), ``_loadgen`` (the multi-process load generator), ``_wrk`` (wrk,
used instead when it is on PATH), ``_http`` (response framing without I/O), ``_servers``
(starting and stopping the servers), ``_scripts`` (the JavaScript deployed), ``_report`` (the
Markdown, from ``performance_template.md``); run as their own processes: ``bare_app`` and
``static_responder`` (the baselines) and ``pool_probe`` (the sandbox round trip alone).
"""
