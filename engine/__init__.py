"""aiwebengine's core: everything that is not HTTP.

Packages and modules, by the idea each owns:

* ``config``      -- the typed configuration and how it is loaded (TOML, environment).
* ``errors``      -- the failures a caller can act on, as values; mapped to HTTP in ``handlers``.
* ``breaker``     -- the circuit-breaker state machine shared by scripts and storage.
* ``routing``     -- the route table of script routes and its matcher.
* ``http_contract`` -- what a script sees of a request and how its return value becomes a response.
* ``storage``     -- the database: schema, migrations, repositories.
* ``sandbox``     -- QuickJS worker processes and the pool that supervises them.
* ``scripts``     -- the script lifecycle: upsert, init, registration swap, delete.
* ``logs``        -- script logs: writing, querying, live tail.
* ``app``         -- the application factory that wires the services to ``handlers``.

``engine`` never imports ``handlers``: ``app`` finds the HTTP surfaces through the
``aiwebengine.surfaces`` entry point group (``handlers:register`` is the one shipped).
Also here: ``runtime`` (every service started and stopped as one unit) and ``cli``.
"""

__version__ = "0.1.0"
